"""GLUE tasks in both on-disk layouts, plus the Hugging Face hub.

Layouts under config.data.path (checked in this order, first match wins):
  * original GLUE TSV: <path>/SST-2/train.tsv, dev.tsv, test.tsv (or <path> is
    the task dir itself). CoLA train/dev are headerless (source, label,
    original_label, sentence); MRPC may be msr_paraphrase_{train,test}.txt;
    MNLI has dev_matched/dev_mismatched/test_matched/test_mismatched.tsv.
    Text labels (entailment, ...) and 0/1 labels both map through labels.py.
  * Hugging Face layout: <path>/sst2/ (or <path>) holding `save_to_disk`
    output, or per-split files <split>.{parquet,jsonl,json,csv} or sharded
    <split>-00000-of-00001.parquet as on the hub; integer `label`, -1 = unlabelled.
  * path == "": datasets.load_dataset("nyu-mll/glue", name) (needs network).

LABEL_NAMES match HF glue's ClassLabel ids, so a TSV string label and the HF
integer label of the same row get the same id (tests check this on fixtures).
Our split names: train, dev, test; MNLI: train, dev_matched, dev_mismatched,
test_matched, test_mismatched (task.splits["dev"] resolves to dev_matched).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import os

import datasets

from jaxdistill.data import files as files_lib
from jaxdistill.data.config import DataSpec
from jaxdistill.data.errors import DataError
from jaxdistill.data.task_data import RawSplit, RawTask, Source

_STD_TSV = (("train", ("train.tsv",)), ("dev", ("dev.tsv",)), ("test", ("test.tsv",)))
_STD_HF = (("train", "train"), ("validation", "dev"), ("test", "test"))
_MNLI_TSV = (
    ("train", ("train.tsv",)),
    ("dev_matched", ("dev_matched.tsv",)),
    ("dev_mismatched", ("dev_mismatched.tsv",)),
    ("test_matched", ("test_matched.tsv",)),
    ("test_mismatched", ("test_mismatched.tsv",)),
)
_MNLI_HF = (
    ("train", "train"),
    ("validation_matched", "dev_matched"),
    ("validation_mismatched", "dev_mismatched"),
    ("test_matched", "test_matched"),
    ("test_mismatched", "test_mismatched"),
)


@dataclasses.dataclass(frozen=True)
class GlueTask:
  name: str  # HF config name
  tsv_dir: str  # directory name in the original GLUE download
  hf_columns: tuple[str, ...]  # text columns in the HF layout
  tsv_columns: tuple[str, ...]  # text columns in the TSV header
  tsv_label: str  # label column in the TSV header
  label_names: tuple[str, ...] | None  # None = regression (STS-B)
  tsv_files: tuple = _STD_TSV  # (our split, candidate file names)
  hf_splits: tuple = _STD_HF  # (HF split, our split)
  headerless: tuple[str, ...] = ()  # column names for header-less TSVs (CoLA train/dev)

  @property
  def is_regression(self) -> bool:
    return self.label_names is None


GLUE_TASKS = {
    t.name: t
    for t in (
        GlueTask("cola", "CoLA", ("sentence",), ("sentence",), "label", ("unacceptable", "acceptable"),
                 headerless=("source", "label", "original_label", "sentence")),
        GlueTask("sst2", "SST-2", ("sentence",), ("sentence",), "label", ("negative", "positive")),
        GlueTask("mrpc", "MRPC", ("sentence1", "sentence2"), ("#1 String", "#2 String"), "Quality",
                 ("not_equivalent", "equivalent"),
                 tsv_files=(("train", ("train.tsv", "msr_paraphrase_train.txt")), ("dev", ("dev.tsv",)),
                            ("test", ("test.tsv", "msr_paraphrase_test.txt")))),
        GlueTask("qqp", "QQP", ("question1", "question2"), ("question1", "question2"), "is_duplicate",
                 ("not_duplicate", "duplicate")),
        GlueTask("stsb", "STS-B", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "score", None),
        GlueTask("mnli", "MNLI", ("premise", "hypothesis"), ("sentence1", "sentence2"), "gold_label",
                 ("entailment", "neutral", "contradiction"), tsv_files=_MNLI_TSV, hf_splits=_MNLI_HF),
        GlueTask("qnli", "QNLI", ("question", "sentence"), ("question", "sentence"), "label",
                 ("entailment", "not_entailment")),
        GlueTask("rte", "RTE", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label",
                 ("entailment", "not_entailment")),
        GlueTask("wnli", "WNLI", ("sentence1", "sentence2"), ("sentence1", "sentence2"), "label",
                 ("not_entailment", "entailment")),
    )
}
HF_EXTENSIONS = (".parquet", ".jsonl", ".json", ".csv")


def glue_task(name: str) -> GlueTask:
  key = name.lower().replace("-", "").replace("_", "")
  if key not in GLUE_TASKS:
    raise DataError(f"unknown GLUE task {name!r}; valid: {['glue/' + n for n in GLUE_TASKS]}")
  return GLUE_TASKS[key]


# ---------------------------------------------------------------- TSV layout


def read_glue_tsv(path: str, task: GlueTask, where: str) -> dict[str, list[str]]:
  """Columns of a GLUE TSV, read like the reference GLUE processors.

  csv with QUOTE_NONE (GLUE texts contain unbalanced quotes) rather than
  pandas, because rows can be ragged: a label that is the last header column
  is taken from the row's last field, as the reference processors do.
  """
  csv.field_size_limit(2**31 - 1)
  with open(path, encoding="utf-8-sig", newline="") as f:
    rows = [row for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if row]
  if not rows:
    raise DataError(f"{where} is empty; re-download the GLUE data for {task.tsv_dir}")
  header, body = rows[0], rows[1:]
  if not set(task.tsv_columns) <= set(header) and task.headerless:
    header, body = list(task.headerless), rows  # CoLA train/dev: first row is data
  files_lib.require_columns(header, task.tsv_columns, where=where)
  wanted = list(task.tsv_columns) + ([task.tsv_label] if task.tsv_label in header else [])
  index = {c: header.index(c) for c in wanted}
  if task.tsv_label in index and index[task.tsv_label] == len(header) - 1:
    index[task.tsv_label] = -1
  need = max(i for i in index.values()) + 1
  columns = {c: [] for c in wanted}
  for line, row in enumerate(body):
    if len(row) < need:
      raise DataError(
          f"{where}: data row {line} has {len(row)} tab-separated fields, expected {len(header)} "
          f"({header}); fix or remove that row"
      )
    for c, i in index.items():
      columns[c].append(row[i])
  return columns


def _find_tsv(task_dir: str, candidates) -> str | None:
  for name in candidates:
    if os.path.isfile(os.path.join(task_dir, name)):
      return os.path.join(task_dir, name)
  return None


# ---------------------------------------------------------------- HF layout


def _hf_split_files(task_dir: str, hf_split: str, our_split: str) -> list[str]:
  for stem in dict.fromkeys((hf_split, our_split)):
    for ext in HF_EXTENSIONS:
      single = os.path.join(task_dir, stem + ext)
      found = [single] if os.path.isfile(single) else []
      found = found or sorted(glob.glob(os.path.join(glob.escape(task_dir), f"{stem}-*{ext}")))
      if found:
        return found
  return []


def _is_minus_one(value) -> bool:
  try:
    return float(value) == -1
  except (TypeError, ValueError):
    return False


def _hf_split_to_raw(task, our_split, columns, features, where) -> RawSplit:
  files_lib.require_columns(columns, task.hf_columns, where=where)
  if "label" not in columns:  # build_split allows this for test splits only
    return files_lib.build_split(our_split, columns, task.hf_columns, "label", label_names=None,
                                 is_regression=task.is_regression, where=where,
                                 unlabelled_ok=our_split.startswith("test"))
  stored = files_lib.class_label_names(features, "label")
  if stored is not None and task.label_names is not None and tuple(stored) != task.label_names:
    raise DataError(
        f"{where} stores label names {stored} but glue/{task.name} expects {list(task.label_names)}; "
        "the data was saved with a different label order, re-export it with HF glue's ClassLabel"
    )
  # HF marks unlabelled test rows with -1; a split that is entirely -1 is unlabelled.
  unlabelled = our_split.startswith("test") and all(_is_minus_one(v) for v in columns["label"])
  if unlabelled:
    columns = {k: v for k, v in columns.items() if k != "label"}
  return files_lib.build_split(
      our_split, columns, task.hf_columns, "label",
      label_names=list(task.label_names or ()) or None, is_regression=task.is_regression,
      where=where, unlabelled_ok=our_split.startswith("test"),
  )


# ---------------------------------------------------------------- source


def _locate(task: GlueTask, root: str):
  """(layout, task_dir, {our_split: paths}) for the first layout found under root."""
  if not os.path.isdir(root):
    raise DataError(f"GLUE path {root!r} is not a directory; set config.data.path to the GLUE data directory")
  for task_dir in (os.path.join(root, task.tsv_dir), os.path.join(root, task.name), root):
    if not os.path.isdir(task_dir):
      continue
    tsv = {s: _find_tsv(task_dir, names) for s, names in task.tsv_files}
    if any(tsv.values()):
      return "tsv", task_dir, {s: [p] for s, p in tsv.items() if p}
    if os.path.isfile(os.path.join(task_dir, "dataset_dict.json")):
      return "disk", task_dir, {"*": [task_dir]}
    hf = {ours: _hf_split_files(task_dir, hf_split, ours) for hf_split, ours in task.hf_splits}
    if any(hf.values()):
      return "hf", task_dir, {s: p for s, p in hf.items() if p}
  raise DataError(
      f"no glue/{task.name} data under {root!r}: expected {task.tsv_dir}/{task.tsv_files[0][1][0]} "
      f"(original GLUE) or {task.name}/{task.hf_splits[0][0]}[-*].parquet|jsonl|csv (HF layout); "
      "fix config.data.path"
  )


def _fingerprint_dir(path: str) -> list:
  paths = sorted(glob.glob(os.path.join(glob.escape(path), "**"), recursive=True))
  return [files_lib.file_fingerprint(p) for p in paths if os.path.isfile(p)]


def glue_source(spec: DataSpec, name: str) -> Source:
  task = glue_task(name)
  full_name = f"glue/{task.name}"
  label_names = list(task.label_names) if task.label_names else None
  text_columns = task.hf_columns

  if not spec.path:
    def read_hub() -> RawTask:
      try:
        dsd = datasets.load_dataset("nyu-mll/glue", task.name)
      except Exception as exc:  # noqa: BLE001 - offline / hub errors become one actionable line
        raise DataError(
            f"could not load {full_name} from the Hugging Face hub ({files_lib._error_line(exc)}); "
            "download GLUE and set config.data.path to its directory"
        ) from exc
      return _from_dataset_dict(task, dsd, f"hub nyu-mll/glue {task.name}", spec.max_examples)

    return Source(full_name, ["hub", "nyu-mll/glue", task.name], read_hub)

  layout, task_dir, paths = _locate(task, spec.path)
  if layout == "disk":
    fingerprint = _fingerprint_dir(task_dir)
  else:
    fingerprint = [files_lib.file_fingerprint(p) for ps in paths.values() for p in ps]

  def read() -> RawTask:
    if layout == "disk":
      return _from_dataset_dict(task, datasets.load_from_disk(task_dir), task_dir, spec.max_examples)
    splits = {}
    for split, split_paths in paths.items():
      where = f"{full_name} {split} file {split_paths[0]!r}"
      if layout == "tsv":
        columns = read_glue_tsv(split_paths[0], task, where)
        tsv_to_hf = dict(zip(task.tsv_columns, task.hf_columns))
        columns = {tsv_to_hf.get(k, "label" if k == task.tsv_label else k): v for k, v in columns.items()}
        raw = files_lib.build_split(
            split, columns, text_columns, "label", label_names=label_names,
            is_regression=task.is_regression, where=where, unlabelled_ok=split.startswith("test"),
        )
      else:
        columns, features = _read_shards(split_paths, where)
        raw = _hf_split_to_raw(task, split, columns, features, where)
      splits[split] = raw.head(spec.max_examples)
    return RawTask(full_name, label_names, task.is_regression, splits, text_columns)

  return Source(full_name, [layout] + fingerprint, read)


def _read_shards(paths: list[str], where: str):
  columns, features = None, None
  for path in paths:
    part, features = files_lib.read_table(path, where)
    columns = part if columns is None else {k: columns[k] + part.get(k, []) for k in columns}
  return columns, features


def _from_dataset_dict(task: GlueTask, dsd, origin: str, max_examples: int) -> RawTask:
  splits = {}
  for hf_split, ours in task.hf_splits:
    if hf_split in dsd:
      ds = dsd[hf_split]
      where = f"glue/{task.name} {ours} split of {origin}"
      splits[ours] = _hf_split_to_raw(task, ours, ds[:], ds.features, where).head(max_examples)
  if not splits:
    raise DataError(f"{origin} has none of the splits {[s for s, _ in task.hf_splits]}; check the dataset")
  label_names = list(task.label_names) if task.label_names else None
  return RawTask(f"glue/{task.name}", label_names, task.is_regression, splits, task.hf_columns)
