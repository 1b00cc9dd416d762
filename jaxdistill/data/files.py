"""Local data files (csv/tsv/json/jsonl/parquet) and the task="files" source.

Files are read with Hugging Face `datasets` packaged builders into a throwaway
cache (we keep our own tokenised cache, the arrow copy would be redundant).
CSV/TSV cells are read as *strings* (every column gets a `str` converter) so a
text like "007" stays "007" and labels keep their exact spelling for the
name-first label rule in labels.py.
"""

from __future__ import annotations

import csv
import os
import tempfile

import datasets
import numpy as np

from jaxdistill.data import labels as labels_lib
from jaxdistill.data.config import DataSpec
from jaxdistill.data.errors import DataError
from jaxdistill.data.task_data import UNLABELLED, RawSplit, RawTask, Source

# Extension -> datasets packaged builder.
BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet"}


def file_fingerprint(path: str) -> list:
  """(absolute path, mtime_ns, size): changes whenever the file is edited or replaced."""
  st = os.stat(path)
  return [os.path.abspath(path), st.st_mtime_ns, st.st_size]


def check_file(path: str, what: str) -> str:
  if not os.path.exists(path):
    raise DataError(f"{what} {path!r} does not exist; fix the path (relative paths are from {os.getcwd()!r})")
  if os.path.isdir(path):
    raise DataError(f"{what} {path!r} is a directory; point it at a single .csv/.tsv/.json/.jsonl/.parquet file")
  ext = os.path.splitext(path)[1].lower()
  if ext not in BUILDERS:
    raise DataError(f"{what} {path!r} has unsupported extension {ext!r}; convert it to one of {sorted(BUILDERS)}")
  return ext


def _csv_header(path: str, sep: str) -> list[str]:
  with open(path, encoding="utf-8-sig", newline="") as f:
    return next(csv.reader(f, delimiter=sep), [])


def _error_line(exc: BaseException) -> str:
  # datasets wraps parser errors (DatasetGenerationError); the cause is the useful part.
  while exc.__cause__ is not None:
    exc = exc.__cause__
  text = str(exc).strip().splitlines()
  return f"{type(exc).__name__}: {text[0] if text else ''}"


def read_table(path: str, what: str = "data file") -> tuple[dict[str, list], datasets.Features]:
  """Read one file into {column: list of python values} plus its `datasets` features."""
  ext = check_file(path, what)
  builder = BUILDERS[ext]
  kwargs = {}
  if builder == "csv":
    sep = "\t" if ext == ".tsv" else ","
    if os.path.getsize(path) == 0:
      raise DataError(f"{what} {path!r} is empty; it needs a header row and at least one data row")
    header = _csv_header(path, sep)
    kwargs = dict(sep=sep, encoding="utf-8-sig", keep_default_na=False, converters={c: str for c in header if c})
  bars_were_on = datasets.utils.logging.is_progress_bar_enabled()
  datasets.disable_progress_bars()  # one bar per tiny file is noise in the training log
  try:
    with tempfile.TemporaryDirectory(prefix="jaxdistill-hf-") as hf_cache:
      ds = datasets.load_dataset(
          builder, data_files={"data": [path]}, split="data", cache_dir=hf_cache, keep_in_memory=True, **kwargs
      )
      columns = ds[:] if len(ds) else {name: [] for name in ds.column_names}
      return dict(columns), ds.features
  except Exception as exc:  # noqa: BLE001 - any parser failure becomes one actionable line
    if "corresponds to no data" in _error_line(exc):  # datasets' words for a file without rows
      raise DataError(f"{what} {path!r} has no data rows; add data rows or drop this split from "
                      "the config") from exc
    raise DataError(
        f"could not parse {what} {path!r} as {ext[1:]}: {_error_line(exc)}; check the format "
        "(.csv comma-separated with quotes, .tsv tab-separated, .jsonl one object per line)"
    ) from exc
  finally:
    if bars_were_on:
      datasets.enable_progress_bars()


def require_columns(columns, needed, *, where: str, config_key: str = "") -> None:
  """DataError naming the missing column, the available ones and the config key to fix."""
  for name in needed:
    if name not in columns:
      fix = f"set config.data.{config_key}" if config_key else "check the file"
      raise DataError(f"{where} has no column {name!r}; available columns: {list(columns)}; {fix}")


def class_label_names(features, column: str) -> list[str] | None:
  feature = features.get(column) if features is not None else None
  return list(feature.names) if isinstance(feature, datasets.ClassLabel) else None


def build_split(
    split: str,
    columns: dict[str, list],
    text_columns: tuple[str, ...],
    label_column: str,
    *,
    label_names: list[str] | None,
    is_regression: bool,
    where: str,
    unlabelled_ok: bool,
) -> RawSplit:
  """Texts + label ids for one split. A missing label column is only allowed for test splits."""
  n = len(columns[text_columns[0]])
  if n == 0:
    raise DataError(f"{where} has no rows; add data rows or drop this split from the config")
  texts = [labels_lib.to_text(v) for v in columns[text_columns[0]]]
  pairs = [labels_lib.to_text(v) for v in columns[text_columns[1]]] if len(text_columns) > 1 else None
  values = columns.get(label_column) if label_column else None
  if values is None:
    if not unlabelled_ok:
      raise DataError(f"{where} has no label column {label_column!r}; available columns: "
                      f"{list(columns)}; set config.data.label_column ('' for text without labels)")
    return RawSplit(split, texts, pairs, _unlabelled(n, is_regression), has_labels=False)
  if is_regression:
    labels = labels_lib.parse_regression(values, where=where)
  else:
    labels = labels_lib.map_labels(values, label_names, where=where)
  return RawSplit(split, texts, pairs, labels)


def _unlabelled(n: int, is_regression: bool) -> np.ndarray:
  return np.full(n, np.nan, np.float32) if is_regression else np.full(n, UNLABELLED, np.int32)


def files_source(spec: DataSpec) -> Source:
  """task="files": one local file per split, named text/pair/label columns."""
  files = spec.files_by_split()
  if not files:
    raise DataError("task='files' needs at least one of config.data.train_file / dev_file / test_file")
  if not spec.text_column:
    raise DataError("task='files' needs config.data.text_column (the column holding the input text)")
  # label_column="" reads text without labels (e.g. DistilBERT's MLM stages): every row of
  # every split is unlabelled (label -1, NaN for regression), and no split is evaluated. A
  # named label column that a train/dev file lacks stays an error, so a typo cannot
  # silently drop the labels.
  unlabelled = not spec.label_column
  for split, path in files.items():
    check_file(path, f"config.data.{split}_file")
  text_columns = (spec.text_column,) + ((spec.text_pair_column,) if spec.text_pair_column else ())

  def read() -> RawTask:
    tables = {}
    for split, path in files.items():
      columns, features = read_table(path, f"{split} file")
      where = f"{split} file {path!r}"
      require_columns(columns, text_columns[:1], where=where, config_key="text_column")
      require_columns(columns, text_columns[1:], where=where, config_key="text_pair_column")
      tables[split] = (path, columns, features)
    if spec.is_regression:
      label_names = None
    elif unlabelled:  # explicit names keep a head of that size (e.g. distilling on raw text)
      label_names = list(spec.label_names) or None
    else:
      label_names = _resolve_label_names(spec, tables)
    splits = {}
    for split, (path, columns, _) in tables.items():
      splits[split] = build_split(
          split, columns, text_columns, spec.label_column,
          label_names=label_names, is_regression=spec.is_regression,
          where=f"{split} file {path!r}", unlabelled_ok=(split == "test" or unlabelled),
      ).head(spec.max_examples)
    return RawTask("files", label_names, spec.is_regression, splits, text_columns)

  return Source("files", [file_fingerprint(p) for p in files.values()], read)


def _resolve_label_names(spec: DataSpec, tables) -> list[str]:
  """Explicit names > a ClassLabel stored in the file > sorted labels of the first labelled split."""
  declared = None
  for split, (path, columns, features) in tables.items():
    names = class_label_names(features, spec.label_column)
    if names is None:
      continue
    if spec.label_names and list(spec.label_names) != names:
      raise DataError(
          f"{split} file {path!r} stores label names {names} but config.data.label_names is "
          f"{list(spec.label_names)}; make them identical (same order) or leave label_names empty"
      )
    declared = declared or names
  if spec.label_names:
    return list(spec.label_names)
  if declared:
    return declared
  for split in ("train", "dev", "test"):
    if split in tables and spec.label_column in tables[split][1]:
      path, columns, _ = tables[split]
      return labels_lib.infer_label_names(columns[spec.label_column], where=f"{split} file {path!r}")
  raise DataError(
      f"no split has a label column {spec.label_column!r} to infer label names from; "
      "set config.data.label_names or config.data.label_column ('' for text without labels)"
  )
