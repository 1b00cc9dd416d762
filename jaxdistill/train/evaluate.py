"""Evaluation: predictions over a whole split (no example dropped) and the task's metrics."""

from __future__ import annotations

import json
import os

import numpy as np

from jaxdistill import data as data_lib
from jaxdistill.data import ner, squad, token_span_tasks
from jaxdistill.metrics import compute_metrics, primary_metric, task_kind
from jaxdistill.train.sharding import BatchLayout

__all__ = ["evaluate", "predict_split", "task_metric", "write_word_tags"]


def task_metric(task) -> str:
  """The metric that picks the best checkpoint and measures retention for `task`."""
  if task.kind != "sequence":  # entity F1 (NER), SQuAD F1
    return "f1"
  return primary_metric(_kind(task))


def _kind(task) -> str:
  return task_kind(task.name, is_regression=task.is_regression, num_labels=task.num_labels)


def predict_split(predict, params, task, split: str, config, batch_sharding) -> tuple[np.ndarray, np.ndarray]:
  """(logits [N, C], labels [N]) for every example of `split`, in order, on every process.

  Each process feeds its rows of each batch; `predict` returns the whole batch's logits
  replicated. Evaluation batches are the split's rows in order and the eval batcher pads the
  last one with weight-0 rows, which are dropped here: every example is counted exactly once.
  """
  data, bs = task.splits[split], config.train.eval_batch_size
  layout = BatchLayout(batch_sharding, bs)
  logits, labels = [], []
  for rows, batch in zip(data_lib.batch_plan(data.lengths, bs, train=False),
                         layout.batches(data, train=False, bucket_multiple=config.train.bucket_multiple),
                         strict=True):
    out = np.asarray(predict(params, layout.put(batch)))[:len(rows)]
    if out.ndim == 3:  # per-token logits [B, S_batch, C]: to the split's full length
      out = np.pad(out, ((0, 0), (0, data.max_length - out.shape[1]), (0, 0)))
    logits.append(out)
    labels.append(data.labels[rows])
  logits, labels = np.concatenate(logits), np.concatenate(labels)
  if len(labels) != len(task.splits[split]):
    raise RuntimeError(f"evaluated {len(labels)} of {len(task.splits[split])} {split} examples")
  return logits, labels


def write_word_tags(path, logits, meta, label_names) -> list[list[str]]:
  """A token task's predictions_<split>.json: a JSON list with one line per sentence (in split
  order) of its words' predicted tags, each word's first wordpiece as the metrics read it;
  what the results tables score per sentence (jaxdistill/results_token_span.py). Returns them."""
  tags = ner.predictions_to_words(np.asarray(logits).argmax(-1), meta.word_ids,
                                  [len(w) for w in meta.words], list(label_names))
  tmp = f"{path}.tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    f.write("[\n" + ",\n".join(json.dumps(t, separators=(",", ":")) for t in tags) + "\n]\n")
  os.replace(tmp, path)  # a crash mid-write never leaves a truncated predictions file
  return tags


def evaluate(predict, params, task, split: str, config, batch_sharding, *,
             predictions_path=None) -> dict[str, float]:
  """The split's metrics. `predictions_path`: also write the predictions there; for SQuAD
  the answers in the official format (id -> text), as the official evaluate-v1.1.py reads
  them; for a token task each sentence's predicted tag per word (write_word_tags)."""
  logits, labels = predict_split(predict, params, task, split, config, batch_sharding)
  if task.kind == "token":
    if predictions_path is not None:
      write_word_tags(predictions_path, logits, task.meta[split], task.label_names)
    return token_span_tasks.token_metrics(logits, task.meta[split], task.label_names)
  if task.kind == "span":  # decoded once, for the metrics and the official predictions file
    answers = token_span_tasks.span_predictions(logits, task.meta[split])
    if predictions_path is not None:
      squad.write_predictions(str(predictions_path), answers)
    return token_span_tasks.span_metrics(logits, task.meta[split], answers)
  preds = logits[:, 0] if task.is_regression else logits
  return {k: float(v) for k, v in compute_metrics(_kind(task), preds, labels).items()}
