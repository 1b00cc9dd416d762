"""The two tasks whose labels live on tokens: WNUT-2016 NER (`data.task=wnut16`, a token head)
and SQuAD v1.1 (`data.task=squad`, a span head), as TaskData the trainer batches like any other.

- wnut16: the fixed split of data/ner.py; labels [N, S] int32 on each word's first wordpiece,
  -100 elsewhere (not scored, not trained). Evaluation writes the argmax back per word and
  scores entity-level P/R/F1 (seqeval's definition) and token accuracy.
- squad: the official train file cut into our train and dev (the last DEV_ARTICLES articles
  of train-v1.1.json are dev, so the model picks its best checkpoint on questions it never
  trained on and never sees the official dev set before the end); "test" is the official
  dev-v1.1.json, the split the papers report. Each question becomes one or more windowed
  features (data/squad.py); labels [F, 2] = (start, end) token of the first answer, (0, 0) =
  [CLS] when a window does not hold it. Evaluation picks the best span per question over its
  windows and scores exact match and F1 with the official v1.1 definitions, as fractions
  (0.81 = 81 F1).

Other data in the same layouts: `data.train_file` / `dev_file` / `test_file` (SQuAD v1.1 JSON
files for `squad`, CoNLL-style token-per-line files for `wnut16`: any BIO NER data), or
`data.path="hf:<dataset>"` for Hugging Face `datasets` (online: "hf:squad"; NER: a dataset
with `tokens` and `ner_tags` columns, e.g. "hf:conll2003"; its `validation` split is dev).

`data.max_examples` keeps the first N training examples (questions / tweets) and
`data.max_eval_examples` the first N of dev and test. Not cached on disk: tokenising
them takes seconds (tests/test_task_heads_e2e.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import numpy as np

from jaxdistill.data import ner, squad
from jaxdistill.data.config import DataSpec
from jaxdistill.data.errors import DataError
from jaxdistill.data.squad_metric import squad_evaluate
from jaxdistill.data.task_data import Split, TaskData

log = logging.getLogger(__name__)

TASK_KINDS = {"wnut16": "token", "squad": "span"}
DEV_ARTICLES = 20  # of train-v1.1.json's 442 articles (about 4,000 questions)
MAX_QUERY_LENGTH = 64
MAX_ANSWER_LENGTH = 30


@dataclasses.dataclass
class TokenMeta:
  """What NER evaluation needs beyond the arrays: each token's word and the gold tags."""
  word_ids: np.ndarray   # [N, S] int32, -1 on specials and padding
  words: list            # [N] lists of words
  tags: list             # [N] lists of gold tags


@dataclasses.dataclass
class SpanMeta:
  examples: list                 # squad.QAExample per question
  features: squad.QAFeatures     # windows, with example_index and offsets


def _split(name: str, ids, types, mask, labels, texts) -> Split:
  return Split(name, ids.astype(np.int32), types.astype(np.int32),
               mask.sum(axis=1).astype(np.int32), labels.astype(np.int32), texts)


def _cut(items: list, n: int) -> list:
  return items if n <= 0 else items[:n]


# ---- Other sources in the same layouts ----------------------------------------------------------
def squad_from_hf(records) -> list:
  """QAExamples from HF `datasets` SQuAD rows (id, context, question, answers{text, answer_start})."""
  out = []
  for r in records:
    a = r["answers"]
    ex = squad.QAExample(str(r["id"]), r["question"], r["context"], list(a["text"]),
                         [int(x) for x in a["answer_start"]])
    for text, start in zip(ex.answers, ex.answer_starts):
      if ex.context[start:start + len(text)] != text:
        raise DataError(f"question {ex.id!r}: answer {text!r} is not at answer_start={start} of its "
                        "context; fix the data (SQuAD offsets are characters into the context)")
    out.append(ex)
  return out


def ner_from_hf(records, tag_names) -> list:
  """(words, tags) sentences from HF token-classification rows (tokens, ner_tags ids)."""
  out = []
  for i, r in enumerate(records):
    words, ids = list(r["tokens"]), list(r["ner_tags"])
    if len(words) != len(ids):
      raise DataError(f"row {i} has {len(words)} tokens but {len(ids)} ner_tags; give one tag per token")
    tags = [tag_names[k] for k in ids]
    for t in tags:
      ner._check_tag(t, f"row {i}")
    out.append((words, tags))
  return out


def _hf(spec: DataSpec):
  name = spec.path[len("hf:"):]
  try:
    import datasets  # noqa: PLC0415  (optional, online)
  except ImportError:
    raise DataError(f"data.path={spec.path!r} needs the `datasets` package (pip install datasets) "
                    "and network access; or give data.train_file/dev_file/test_file") from None
  d = datasets.load_dataset(name)
  return {"train": d["train"], "dev": d["validation"], "test": d["test"] if "test" in d else d["validation"]}


def _ner_sentences(spec: DataSpec) -> dict:
  if spec.path.startswith("hf:"):
    d = _hf(spec)
    names = d["train"].features["ner_tags"].feature.names
    return {k: ner_from_hf(v, names) for k, v in d.items()}
  files = spec.files_by_split()
  if files:
    if set(files) != {"train", "dev", "test"}:
      raise DataError("NER files: give all of data.train_file, dev_file and test_file "
                      f"(got {sorted(files)})")
    return {k: ner.read_conll(v) for k, v in files.items()}
  return ner.wnut_splits()


def load_wnut16(spec: DataSpec, tokenizer) -> TaskData:
  splits = _ner_sentences(spec)
  labels = ner.label_list([t for s in splits.values() for _, t in s])
  to_id = {l: i for i, l in enumerate(labels)}
  out, meta = {}, {}
  for name, sentences in splits.items():
    sentences = _cut(sentences, spec.max_examples if name == "train" else spec.max_eval_examples)
    words, tags = [w for w, _ in sentences], [t for _, t in sentences]
    enc = ner.align_labels(words, tags, tokenizer, to_id, spec.max_length)
    out[name] = _split(name, enc["input_ids"], enc["token_type_ids"], enc["attention_mask"],
                       enc["labels"], [" ".join(w) for w in words])
    meta[name] = TokenMeta(enc["word_ids"], words, tags)
  return TaskData("wnut16", labels, False, out, ("tokens",), kind="token", meta=meta)


def _article_sizes(path: str) -> list[int]:
  """Questions per article of a SQuAD file, in file order (read_squad keeps that order)."""
  with open(path, encoding="utf-8") as f:
    data = json.load(f)["data"]
  return [sum(len(p["qas"]) for p in a["paragraphs"]) for a in data]


def _squad_splits(max_train: int, max_eval: int) -> dict[str, list]:
  paths = squad.squad_paths()
  train = squad.read_squad(paths["train"])
  cut = len(train) - sum(_article_sizes(paths["train"])[-DEV_ARTICLES:])
  return {"train": _cut(train[:cut], max_train), "dev": _cut(train[cut:], max_eval),
          "test": _cut(squad.read_squad(paths["dev"]), max_eval)}


def _squad_sources(spec: DataSpec) -> dict:
  if spec.path.startswith("hf:"):
    d = _hf(spec)
    return {k: _cut(squad_from_hf(v), spec.max_examples if k == "train" else spec.max_eval_examples)
            for k, v in d.items()}
  files = spec.files_by_split()
  if files:
    if set(files) != {"train", "dev", "test"}:
      raise DataError("SQuAD files: give all of data.train_file, dev_file and test_file "
                      f"(SQuAD v1.1 JSON; got {sorted(files)})")
    return {k: _cut(squad.read_squad(v), spec.max_examples if k == "train" else spec.max_eval_examples)
            for k, v in files.items()}
  return _squad_splits(spec.max_examples, spec.max_eval_examples)


def load_squad(spec: DataSpec, tokenizer) -> TaskData:
  out, meta = {}, {}
  for name, examples in _squad_sources(spec).items():
    f = squad.prepare_features(examples, tokenizer, max_length=spec.max_length,
                               doc_stride=spec.doc_stride, max_query_length=MAX_QUERY_LENGTH)
    labels = np.stack([f.start_positions, f.end_positions], axis=1)
    texts = [examples[int(k)].question for k in f.example_index]
    out[name] = _split(name, f.input_ids, f.token_type_ids, f.attention_mask, labels, texts)
    meta[name] = SpanMeta(examples, f)
    log.info("squad %s: %d questions in %d features", name, len(examples), len(f))
  return TaskData("squad", ["start", "end"], False, out, ("question", "context"), kind="span", meta=meta)


def load(spec: DataSpec, tokenizer) -> TaskData:
  if spec.task == "wnut16":
    return load_wnut16(spec, tokenizer)
  if spec.task == "squad":
    return load_squad(spec, tokenizer)
  raise DataError(f"data.task={spec.task!r} is not a token or span task; use one of {sorted(TASK_KINDS)}")


def check_spec(spec: DataSpec) -> None:
  """The asset is installed and the settings fit (before any work)."""
  own = spec.path.startswith("hf:") or bool(spec.files_by_split())
  for split, path in spec.files_by_split().items():
    if not os.path.isfile(path):
      raise DataError(f"data.{split}_file={path!r} does not exist; give the path of a "
                      f"{'SQuAD JSON' if spec.task == 'squad' else 'CoNLL'} file")
  if spec.task == "wnut16":
    if not own:
      ner.wnut_path()
  else:
    if not own:
      squad.squad_paths()
    if spec.max_length - MAX_QUERY_LENGTH - 3 <= spec.doc_stride:
      raise DataError(f"data.doc_stride={spec.doc_stride} leaves no room in windows of "
                      f"data.max_length={spec.max_length} (questions take up to {MAX_QUERY_LENGTH} "
                      f"tokens); use e.g. max_length=384 with doc_stride=128, or 256 with 64")
  if spec.train_override or spec.label_names or spec.is_regression:
    raise DataError(f"data.task={spec.task!r} reads its labels from its files; leave "
                    "train_override, label_names and is_regression at their defaults")
  if spec.path and not spec.path.startswith("hf:"):
    raise DataError(f"data.path={spec.path!r}: for {spec.task} use 'hf:<dataset>' (Hugging Face "
                    "datasets) or data.train_file/dev_file/test_file")


# ---- Evaluation -------------------------------------------------------------------------------
def token_metrics(logits: np.ndarray, meta: TokenMeta, label_names) -> dict[str, float]:
  """Entity-level P/R/F1 and token accuracy of [N, S, C] logits, per word."""
  pred = ner.predictions_to_words(np.asarray(logits).argmax(-1), meta.word_ids,
                                  [len(w) for w in meta.words], list(label_names))
  m = ner.ner_metrics(meta.tags, pred)
  return {"f1": float(m["f1"]), "precision": float(m["precision"]), "recall": float(m["recall"]),
          "token_accuracy": float(m["accuracy"])}


def span_metrics(logits: np.ndarray, meta: SpanMeta, preds: dict | None = None) -> dict[str, float]:
  """SQuAD F1 and exact match (fractions) of [F, S, 2] logits, best span per question
  (`preds`: span_predictions of those logits, when the caller already decoded them)."""
  m = squad_evaluate(meta.examples, span_predictions(logits, meta) if preds is None else preds)
  return {"f1": m["f1"] / 100.0, "exact_match": m["exact_match"] / 100.0}


def span_predictions(logits: np.ndarray, meta: SpanMeta) -> dict[str, str]:
  logits = np.asarray(logits)
  return squad.postprocess(meta.examples, meta.features, logits[..., 0], logits[..., 1],
                           max_answer_length=MAX_ANSWER_LENGTH)
