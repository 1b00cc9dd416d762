"""Seed summaries and the paired bootstrap for the results tables. NumPy only (no JAX).

    summary([0.81, 0.82, 0.80])            # {"n": 3, "mean": ..., "std": ..., "median": ...}
    diff, lo, hi = paired_bootstrap_ci(correct_a, correct_b)   # [n_seeds, n_examples] 0/1 each
    diff, lo, hi = paired_bootstrap_ci_scores(f1_a, f1_b)      # per-example scores in [0, 1]
    diff, lo, hi = paired_bootstrap_ci_f1(counts_a, counts_b)  # [n_seeds, n_examples, 3] (tp, pred, gold)
    excludes_zero(lo, hi)

The comparison is paired twice over: A and B are scored on the same test examples, and seed
i of A is compared with seed i of B (same data order and initialisation draws), so the
example-to-example and seed-to-seed variation both A and B share cancels out in the
difference, and the interval is much narrower than one built from two independent scores.

Resampling is over test examples only (the same indices for A and B and for every seed): the
CI answers "how much would this difference move on another test set of this size", for these
seeds. With few seeds it does not cover seed-to-seed variation beyond what the seeds averaged
show, which is why the tables also report the std over seeds.

Three metrics, one resampling: accuracy (0/1 per example) and a mean of per-example scores
(SQuAD's per-question F1 or EM) are means over examples, so a resample's difference is the
mean of the per-example differences over the drawn indices. Entity-level micro F1 is not a
mean over sentences: it is 2 tp / (pred + gold) of counts summed over the sentences, so each
resample sums every seed's drawn counts and takes that ratio per seed. All three draw the
same indices from the same generator, row by row (`_resamples`).
"""

from __future__ import annotations

import math

import numpy as np

# Resamples drawn per chunk: 10,000 x 1,280 int64 indices at once would be ~100 MB.
_CHUNK = 1000


def summary(values) -> dict:
  """{"n", "mean", "std" (ddof=1; nan when n < 2), "median"} of a 1-D sequence of numbers."""
  x = np.asarray(values, np.float64).reshape(-1)
  if x.size == 0:
    raise ValueError("summary of no values; pass at least one seed's metric")
  if not np.all(np.isfinite(x)):
    raise ValueError(f"summary of non-finite values {x.tolist()}; drop the failed runs first")
  std = float(np.std(x, ddof=1)) if x.size > 1 else math.nan
  return {"n": int(x.size), "mean": float(np.mean(x)), "std": std, "median": float(np.median(x))}


def _score_matrix(x, name: str, binary: bool) -> np.ndarray:
  """[n_seeds, n_examples] float64 of 0/1 (`binary`) or of scores in [0, 1]."""
  a = np.asarray(x)
  if a.ndim == 1:  # one seed
    a = a[None, :]
  if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
    raise ValueError(f"{name} must be [n_seeds, n_examples] with both > 0, got shape {a.shape}")
  if binary and not np.all((a == 0) | (a == 1)):
    raise ValueError(f"{name} must hold 0/1 (correct or not) per test example; got other values")
  a = a.astype(np.float64)
  if not binary and not np.all((a >= 0) & (a <= 1)):  # also refuses nan
    raise ValueError(f"{name} must hold one score in [0, 1] per test example (e.g. SQuAD F1 as a "
                     "fraction, not in points); got values outside it")
  return a


def _check_pair(a: np.ndarray, b: np.ndarray, names: str) -> None:
  if a.shape != b.shape:
    first, second = names.split(",")
    raise ValueError(f"{first} {a.shape} and {second} {b.shape} differ; pass the same seeds "
                     "(row i = seed i of both) scored on the same test examples")


def _check(n_boot: int, alpha: float | None = None) -> None:
  if int(n_boot) < 1:
    raise ValueError(f"n_boot={n_boot} must be >= 1; use e.g. 10000")
  if alpha is not None and not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha={alpha} must be in (0, 1); 0.05 gives a 95% interval")


def _resamples(n: int, n_boot: int, seed: int):
  """(start, stop, idx [stop - start, n]): the resamples' example indices, drawn with
  replacement from default_rng(seed), one row per resample, in chunks of _CHUNK rows."""
  rng = np.random.default_rng(seed)
  for start in range(0, int(n_boot), _CHUNK):
    stop = min(int(n_boot), start + _CHUNK)
    yield start, stop, rng.integers(0, n, size=(stop - start, n))


def _interval(diff: float, boots: np.ndarray, alpha: float) -> tuple[float, float, float]:
  lo, hi = np.percentile(boots, [100 * alpha / 2, 100 * (1 - alpha / 2)])
  return float(diff), float(lo), float(hi)


# ---- Means over examples: accuracy (0/1) and per-example scores in [0, 1] -------------------
def _bootstrap_means(d: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
  out = np.empty(int(n_boot), np.float64)
  for start, stop, idx in _resamples(d.size, n_boot, seed):
    out[start:stop] = d[idx].mean(axis=1)
  return out


def paired_differences(correct_a, correct_b) -> np.ndarray:
  """[n_examples]: per test example, the mean over seeds of A's correctness minus B's.

  The mean of this vector is the mean over seeds of acc_A(seed) - acc_B(seed), and so is its
  mean over any resample of example indices: the bootstrap needs only this vector."""
  a = _score_matrix(correct_a, "correct_a", True)
  b = _score_matrix(correct_b, "correct_b", True)
  _check_pair(a, b, "correct_a,correct_b")
  return (a - b).mean(axis=0)


def bootstrap_diffs(correct_a, correct_b, n_boot: int = 10000, seed: int = 0) -> np.ndarray:
  """[n_boot] resampled differences: each resample draws n_examples test indices with
  replacement from default_rng(seed), one row of draws per resample, in order."""
  _check(n_boot)
  return _bootstrap_means(paired_differences(correct_a, correct_b), n_boot, seed)


def paired_bootstrap_ci(correct_a, correct_b, n_boot: int = 10000, seed: int = 0,
                        alpha: float = 0.05) -> tuple[float, float, float]:
  """(diff, lo, hi): test accuracy of A minus B, averaged over paired seeds, and its
  (1 - alpha) percentile-bootstrap interval over test examples (see the module docs)."""
  _check(n_boot, alpha)
  d = paired_differences(correct_a, correct_b)
  return _interval(d.mean(), _bootstrap_means(d, n_boot, seed), alpha)


def paired_bootstrap_ci_scores(scores_a, scores_b, n_boot: int = 10000, seed: int = 0,
                               alpha: float = 0.05) -> tuple[float, float, float]:
  """paired_bootstrap_ci for per-example scores in [0, 1] whose mean is the metric (SQuAD:
  each question's F1 or EM): the mean score of A minus B, averaged over paired seeds, and its
  interval. On 0/1 scores it returns exactly what paired_bootstrap_ci does."""
  _check(n_boot, alpha)
  a = _score_matrix(scores_a, "scores_a", False)
  b = _score_matrix(scores_b, "scores_b", False)
  _check_pair(a, b, "scores_a,scores_b")
  d = (a - b).mean(axis=0)
  return _interval(d.mean(), _bootstrap_means(d, n_boot, seed), alpha)


# ---- A ratio of summed counts: entity-level micro F1 -----------------------------------------
def _count_tensor(x, name: str) -> np.ndarray:
  a = np.asarray(x)
  if a.ndim == 2:  # one seed
    a = a[None]
  if a.ndim != 3 or a.shape[2] != 3 or 0 in a.shape[:2]:
    raise ValueError(f"{name} must be [n_seeds, n_examples, 3] (true positives, predicted, gold "
                     f"entities per sentence) with n_seeds, n_examples > 0, got shape {a.shape}")
  if not (np.all(a >= 0) and np.all(a == np.round(a)) and np.all(a[..., 0] <= a[..., 1:].min(-1))):
    raise ValueError(f"{name} must hold counts (ints >= 0) with true positives <= predicted and "
                     "<= gold in every sentence")
  return a.astype(np.float64)


def micro_f1(sums) -> np.ndarray:
  """2 tp / (pred + gold) over the last axis (tp, pred, gold) summed over examples; 0 where
  nothing is predicted or gold (seqeval's zero_division). It equals 2 P R / (P + R)."""
  sums = np.asarray(sums, np.float64)
  den = sums[..., 1] + sums[..., 2]
  return np.divide(2 * sums[..., 0], den, out=np.zeros_like(den), where=den > 0)


def bootstrap_f1_diffs(counts_a, counts_b, n_boot: int = 10000, seed: int = 0) -> np.ndarray:
  """[n_boot]: per resample (indices as `_resamples` draws them, the same for A, B and every
  seed), the mean over seeds of micro F1 of A's drawn counts minus B's."""
  _check(n_boot)
  a, b = _count_tensor(counts_a, "counts_a"), _count_tensor(counts_b, "counts_b")
  _check_pair(a, b, "counts_a,counts_b")
  n, both = a.shape[1], np.concatenate([a, b])  # [2 n_seeds, n, 3]
  out = np.empty(int(n_boot), np.float64)
  for start, stop, idx in _resamples(n, n_boot, seed):
    rows = stop - start
    # times[r, i]: how often resample r drew example i; its product with the counts sums them
    # without materialising [seeds, rows, n, 3].
    times = np.bincount((idx + n * np.arange(rows)[:, None]).ravel(), minlength=rows * n)
    sums = np.einsum("rn,snk->srk", times.reshape(rows, n).astype(np.float64), both)
    f1 = micro_f1(sums)  # [2 n_seeds, rows]
    out[start:stop] = (f1[:a.shape[0]] - f1[a.shape[0]:]).mean(axis=0)
  return out


def paired_bootstrap_ci_f1(counts_a, counts_b, n_boot: int = 10000, seed: int = 0,
                           alpha: float = 0.05) -> tuple[float, float, float]:
  """(diff, lo, hi): entity-level micro F1 of A minus B, averaged over paired seeds, from
  per-sentence (tp, predicted, gold) entity counts [n_seeds, n_examples, 3], and its
  (1 - alpha) percentile-bootstrap interval over sentences (see the module docs)."""
  _check(n_boot, alpha)
  boots = bootstrap_f1_diffs(counts_a, counts_b, n_boot, seed)
  a, b = _count_tensor(counts_a, "counts_a"), _count_tensor(counts_b, "counts_b")
  diff = (micro_f1(a.sum(axis=1)) - micro_f1(b.sum(axis=1))).mean()
  return _interval(diff, boots, alpha)


def excludes_zero(lo: float, hi: float) -> bool:
  """Whether the interval [lo, hi] lies strictly on one side of 0."""
  return bool(lo > 0.0 or hi < 0.0)
