"""Evaluation metrics on NumPy arrays: accuracy, F1, Matthews correlation, Pearson, Spearman.

Every metric takes ``(predictions, labels, weights=None)``. Evaluation runs on the host after the
device has produced logits, so this is plain float64 NumPy: exact enough to compare with the
published GLUE numbers and independent of the JAX code under test.

Conventions (chosen once, here, so that no caller has to guess):

* ``weights`` are non-negative per-example weights; 0 marks a padding row, which is ignored.
  Other values act as multiplicities: integer weights give exactly the result of repeating rows.
* Classification predictions are logits / probabilities ``[N, C]`` (argmax is taken) or class ids
  ``[N]``; labels are class ids ``[N]``. Negative labels (the data pipeline's UNLABELLED = -1) and
  non-integral class ids raise ``ValueError``: scoring unlabelled test splits is a bug upstream.
* Degenerate cases return 0.0, never nan and never a warning: MCC and Pearson/Spearman when either
  side is constant (zero variance; sklearn's convention for MCC), F1 when there is no positive
  example and no positive prediction (sklearn's ``zero_division=0``).
* No example, or all weights zero, raises ``ValueError``: an empty evaluation hides a bug.
* Regression predictions that are nan/inf (a diverged model) give nan rather than an exception,
  so the run still finishes and reports what happened.
"""

from __future__ import annotations

import numpy as np

__all__ = ["accuracy", "f1", "macro_f1", "matthews_corrcoef", "pearson", "spearman",
           "confusion_matrix", "compute_metrics", "primary_metric", "task_kind", "TASK_METRICS",
           "PRIMARY_METRIC"]

# Metrics returned by compute_metrics for each kind / task. The first entry is the primary one.
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "macro_f1"),
    "binary": ("accuracy", "f1"),
    "regression": ("pearson", "spearman"),
    "mcc": ("mcc", "accuracy"),
    "sst2": ("accuracy", "f1"),
    "rottentomatoes": ("accuracy", "f1"),
    "mrpc": ("f1", "accuracy"),
    "qqp": ("f1", "accuracy"),
    "cola": ("mcc", "accuracy"),
    "stsb": ("pearson", "spearman"),
    "mnli": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
}
# The GLUE convention for the single number used for best-checkpoint selection and retention.
PRIMARY_METRIC: dict[str, str] = {k: v[0] for k, v in TASK_METRICS.items()}


def _normalise(task: str) -> str:
  key = str(task).rsplit("/", 1)[-1].lower().replace("-", "").replace("_", "")
  return "mnli" if key.startswith("mnli") else key  # mnli_matched, mnli-mm, ...: same metric


def task_kind(task: str, *, is_regression: bool = False, num_labels: int | None = None) -> str:
  """The kind to pass to compute_metrics / primary_metric for any task: the task itself when it is
  known (GLUE, rotten_tomatoes), else "regression", "binary" (2 labels) or "classification"
  (e.g. a custom "files" dataset)."""
  if _normalise(task) in TASK_METRICS:
    return str(task)
  return "regression" if is_regression else "binary" if num_labels == 2 else "classification"


def _task_key(task: str) -> str:
  """"glue/SST-2", "sst2", "rotten_tomatoes", "mnli_mismatched" -> the TASK_METRICS key."""
  key = _normalise(task)
  if key not in TASK_METRICS:
    raise ValueError(f"unknown task or metric kind {task!r}; valid: {sorted(TASK_METRICS)} "
                     "(for a custom dataset pass 'classification', 'binary', 'mcc' or 'regression')")
  return key


def _weights(weights, n: int) -> np.ndarray:
  if n == 0:
    raise ValueError("no examples to evaluate")
  if weights is None:
    return np.ones(n, np.float64)
  w = np.asarray(weights, np.float64).reshape(-1)
  if w.shape != (n,):
    raise ValueError(f"weights have {w.size} entries for {n} examples")
  if not np.all(np.isfinite(w)) or np.any(w < 0):
    raise ValueError("weights must be finite and non-negative")
  if w.sum() <= 0:
    raise ValueError("all example weights are zero: nothing to evaluate")
  return w


def _class_ids(x, what: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim == 2:
    if x.shape[1] < 2:
      raise ValueError(f"{what} of shape {x.shape}: pass class ids [N] or logits [N, C>=2]")
    return np.argmax(x, axis=-1).astype(np.int64)
  if x.ndim != 1:
    raise ValueError(f"{what} must be class ids [N] or logits [N, C], got shape {x.shape}")
  if x.dtype.kind == "f":
    if not np.all(np.isfinite(x)) or np.any(x != np.round(x)):
      raise ValueError(f"{what} are non-integral floats; regression outputs need kind='regression'")
  elif x.dtype.kind not in "iub":
    raise ValueError(f"{what} must be numeric class ids, got dtype {x.dtype}")
  x = x.astype(np.int64)
  if np.any(x < 0):
    raise ValueError(f"{what} contain negative class ids (e.g. UNLABELLED = -1): is this split labelled?")
  return x


def _rows(x, n_label: int, what: str) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim == 0 or x.shape[0] != n_label:
    raise ValueError(f"{what} of shape {x.shape} for {n_label} labels")
  return x


def _prepare_classes(predictions, labels, weights):
  """(pred ids, label ids, weights) with zero-weight rows dropped before validation, so padding
  rows may hold anything (e.g. label -1)."""
  y = np.asarray(labels).reshape(-1)
  p = _rows(predictions, y.shape[0], "predictions")
  w = _weights(weights, y.shape[0])
  keep = w > 0
  return _class_ids(p[keep], "predictions"), _class_ids(y[keep], "labels"), w[keep]


def _prepare_floats(predictions, labels, weights):
  y = np.asarray(labels, np.float64).reshape(-1)
  p = np.asarray(_rows(predictions, y.shape[0], "regression predictions"), np.float64)
  if p.ndim == 2 and p.shape[1] == 1:  # a regression head's [N, 1] output
    p = p[:, 0]
  if p.ndim != 1:
    raise ValueError(f"regression predictions must be [N] or [N, 1], got shape {p.shape}")
  w = _weights(weights, y.shape[0])
  keep = w > 0
  p, y, w = p[keep], y[keep], w[keep]
  if not np.all(np.isfinite(y)):
    raise ValueError("labels contain nan/inf (unlabelled split?)")
  return p, y, w


def confusion_matrix(predictions, labels, weights=None) -> np.ndarray:
  """Weighted confusion matrix ``C[true, pred]``, square over classes 0..max id seen."""
  p, y, w = _prepare_classes(predictions, labels, weights)
  k = int(max(p.max(), y.max())) + 1
  return np.bincount(y * k + p, weights=w, minlength=k * k).reshape(k, k)


def accuracy(predictions, labels, weights=None) -> float:
  p, y, w = _prepare_classes(predictions, labels, weights)
  return float(np.sum(w * (p == y)) / np.sum(w))


def _f1_from_counts(tp: float, fp: float, fn: float) -> float:
  denom = 2 * tp + fp + fn  # F1 = 2PR/(P+R) = 2tp/(2tp+fp+fn); avoids 0/0 in P and R separately
  return float(2 * tp / denom) if denom > 0 else 0.0


def f1(predictions, labels, weights=None) -> float:
  """Binary F1 of the positive class (label 1); any other class counts as negative."""
  p, y, w = _prepare_classes(predictions, labels, weights)
  tp = np.sum(w * ((p == 1) & (y == 1)))
  fp = np.sum(w * ((p == 1) & (y != 1)))
  fn = np.sum(w * ((p != 1) & (y == 1)))
  return _f1_from_counts(tp, fp, fn)


def macro_f1(predictions, labels, weights=None) -> float:
  """Unweighted mean of per-class F1 over the classes present in labels or predictions."""
  c = confusion_matrix(predictions, labels, weights)
  tp = np.diag(c)
  present = (c.sum(0) + c.sum(1)) > 0
  scores = [_f1_from_counts(tp[i], c[:, i].sum() - tp[i], c[i, :].sum() - tp[i])
            for i in np.flatnonzero(present)]
  return float(np.mean(scores))


def matthews_corrcoef(predictions, labels, weights=None) -> float:
  """Matthews correlation; for K classes Gorodkin's R_K (2004), equal to the usual MCC for K=2.

  With C the confusion matrix, s its total, c its trace, t/p the true/predicted class totals:
  R_K = (c s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)). 0.0 when either side is constant.
  """
  cm = confusion_matrix(predictions, labels, weights)
  t, p = cm.sum(1), cm.sum(0)
  s, c = cm.sum(), np.trace(cm)
  denom = (s * s - p @ p) * (s * s - t @ t)
  if denom <= 0:  # all predictions (or all labels) in one class
    return 0.0
  return float(np.clip((c * s - t @ p) / np.sqrt(denom), -1.0, 1.0))


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
  if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
    return float("nan")
  # Constant check on the values themselves: mean-centering a constant vector can leave
  # rounding noise (e.g. 0.1 * 3 / 3 != 0.1), which would turn 0/0 into a random number.
  if np.ptp(x) == 0 or np.ptp(y) == 0:
    return 0.0
  w = w / w.sum()
  dx, dy = x - w @ x, y - w @ y
  r = (w @ (dx * dy)) / np.sqrt((w @ (dx * dx)) * (w @ (dy * dy)))
  return float(np.clip(r, -1.0, 1.0))


def pearson(predictions, labels, weights=None) -> float:
  return _weighted_pearson(*_prepare_floats(predictions, labels, weights))


def _midranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
  """Average ranks for ties, weights as multiplicities: the midpoint of each value's weight span.

  (Unweighted this is the usual average rank minus 1/2, a shift Pearson ignores.)
  """
  uniq, inverse = np.unique(x, return_inverse=True)
  w_eq = np.bincount(inverse.reshape(-1), weights=w, minlength=uniq.size)
  w_less = np.cumsum(w_eq) - w_eq
  return (w_less + w_eq / 2)[inverse.reshape(-1)]


def spearman(predictions, labels, weights=None) -> float:
  """Spearman rank correlation: Pearson of the (average-for-ties) ranks."""
  p, y, w = _prepare_floats(predictions, labels, weights)
  if not (np.all(np.isfinite(p)) and np.all(np.isfinite(y))):
    return float("nan")
  return _weighted_pearson(_midranks(p, w), _midranks(y, w), w)


_METRIC_FNS = {"accuracy": accuracy, "f1": f1, "macro_f1": macro_f1, "mcc": matthews_corrcoef,
               "pearson": pearson, "spearman": spearman}


def compute_metrics(kind: str, predictions, labels, weights=None) -> dict[str, float]:
  """All metrics of a task (see TASK_METRICS), primary first, as Python floats.

  ``kind``: "classification" | "binary" | "regression" | "mcc", or a GLUE task name in any usual
  spelling ("glue/sst2", "SST-2", "rotten_tomatoes", "mnli_matched"). Unknown names raise.
  """
  return {name: _METRIC_FNS[name](predictions, labels, weights) for name in TASK_METRICS[_task_key(kind)]}


def primary_metric(task: str) -> str:
  """The metric for best-checkpoint selection and retention: cola mcc, stsb pearson,
  mrpc/qqp f1, otherwise accuracy (regression kind: pearson; mcc kind: mcc)."""
  return PRIMARY_METRIC[_task_key(task)]
