"""Seed summaries and the paired bootstrap for the results table. NumPy only (no JAX).

    summary([0.81, 0.82, 0.80])            # {"n": 3, "mean": ..., "std": ..., "median": ...}
    diff, lo, hi = paired_bootstrap_ci(correct_a, correct_b)   # [n_seeds, n_examples] 0/1 each
    excludes_zero(lo, hi)

The comparison is paired twice over: A and B are scored on the same test examples, and seed
i of A is compared with seed i of B (same data order and initialisation draws), so the
example-to-example and seed-to-seed variation both A and B share cancels out in the
difference, and the interval is much narrower than one built from two independent accuracies.

Resampling is over test examples only (the same indices for A and B and for every seed): the
CI answers "how much would this difference move on another test set of this size", for these
seeds. With few seeds it does not cover seed-to-seed variation beyond what the seeds averaged
show, which is why the table also reports the std over seeds.
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


def _correct_matrix(x, name: str) -> np.ndarray:
  a = np.asarray(x)
  if a.ndim == 1:  # one seed
    a = a[None, :]
  if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
    raise ValueError(f"{name} must be [n_seeds, n_examples] with both > 0, got shape {a.shape}")
  if not np.all((a == 0) | (a == 1)):
    raise ValueError(f"{name} must hold 0/1 (correct or not) per test example; got other values")
  return a.astype(np.float64)


def paired_differences(correct_a, correct_b) -> np.ndarray:
  """[n_examples]: per test example, the mean over seeds of A's correctness minus B's.

  The mean of this vector is the mean over seeds of acc_A(seed) - acc_B(seed), and so is its
  mean over any resample of example indices: the bootstrap needs only this vector."""
  a, b = _correct_matrix(correct_a, "correct_a"), _correct_matrix(correct_b, "correct_b")
  if a.shape != b.shape:
    raise ValueError(f"correct_a {a.shape} and correct_b {b.shape} differ; pass the same seeds "
                     "(row i = seed i of both) scored on the same test examples")
  return (a - b).mean(axis=0)


def bootstrap_diffs(correct_a, correct_b, n_boot: int = 10000, seed: int = 0) -> np.ndarray:
  """[n_boot] resampled differences: each resample draws n_examples test indices with
  replacement from default_rng(seed), one row of draws per resample, in order."""
  if int(n_boot) < 1:
    raise ValueError(f"n_boot={n_boot} must be >= 1; use e.g. 10000")
  d = paired_differences(correct_a, correct_b)
  n = d.size
  rng = np.random.default_rng(seed)
  out = np.empty(int(n_boot), np.float64)
  for start in range(0, int(n_boot), _CHUNK):
    stop = min(int(n_boot), start + _CHUNK)
    idx = rng.integers(0, n, size=(stop - start, n))
    out[start:stop] = d[idx].mean(axis=1)
  return out


def paired_bootstrap_ci(correct_a, correct_b, n_boot: int = 10000, seed: int = 0,
                        alpha: float = 0.05) -> tuple[float, float, float]:
  """(diff, lo, hi): test accuracy of A minus B, averaged over paired seeds, and its
  (1 - alpha) percentile-bootstrap interval over test examples (see the module docs)."""
  if not 0.0 < alpha < 1.0:
    raise ValueError(f"alpha={alpha} must be in (0, 1); 0.05 gives a 95% interval")
  diff = float(paired_differences(correct_a, correct_b).mean())
  boots = bootstrap_diffs(correct_a, correct_b, n_boot, seed)
  lo, hi = np.percentile(boots, [100 * alpha / 2, 100 * (1 - alpha / 2)])
  return diff, float(lo), float(hi)


def excludes_zero(lo: float, hi: float) -> bool:
  """Whether the interval [lo, hi] lies strictly on one side of 0."""
  return bool(lo > 0.0 or hi < 0.0)
