"""Evaluation: predictions over a whole split (no example dropped) and the task's metrics."""

from __future__ import annotations

import jax
import numpy as np

from jaxdistill import data as data_lib
from jaxdistill.metrics import compute_metrics, primary_metric, task_kind

__all__ = ["evaluate", "predict_split", "task_metric"]


def task_metric(task) -> str:
  """The metric that picks the best checkpoint and measures retention for `task`."""
  return primary_metric(_kind(task))


def _kind(task) -> str:
  return task_kind(task.name, is_regression=task.is_regression, num_labels=task.num_labels)


def predict_split(predict, params, task, split: str, config, batch_sharding) -> tuple[np.ndarray, np.ndarray]:
  """(logits [N, C], labels [N]) for every example of `split`, in order.

  The eval batcher pads the last batch with weight-0 rows; those rows are dropped here, so
  every real example is counted exactly once.
  """
  logits, labels = [], []
  for batch in data_lib.batches(task.splits[split], config.train.eval_batch_size, train=False,
                                bucket_multiple=config.train.bucket_multiple):
    out = predict(params, jax.device_put({k: np.asarray(v) for k, v in batch.items()}, batch_sharding))
    keep = np.asarray(batch["example_weight"]) > 0
    logits.append(np.asarray(out)[keep])
    labels.append(np.asarray(batch["labels"])[keep])
  logits, labels = np.concatenate(logits), np.concatenate(labels)
  if len(labels) != len(task.splits[split]):
    raise RuntimeError(f"evaluated {len(labels)} of {len(task.splits[split])} {split} examples")
  return logits, labels


def evaluate(predict, params, task, split: str, config, batch_sharding) -> dict[str, float]:
  logits, labels = predict_split(predict, params, task, split, config, batch_sharding)
  preds = logits[:, 0] if task.is_regression else logits
  return {k: float(v) for k, v in compute_metrics(_kind(task), preds, labels).items()}
