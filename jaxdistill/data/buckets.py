"""Sequence-length buckets chosen from the data's length histogram (`train.buckets`).

A batch is padded to a bucket length; every distinct length is one more compiled train step.
`train.bucket_multiple=16` rounds each batch's longest row up to a multiple of 16: on Rotten
Tomatoes (max_length 64, reviews of 27 wordpieces on average) that is 4 shapes and 23% of
the step's tokens are padding, although rows sorted by length inside a chunk of batches
(data/batching.py) leave only ~2.4% padding at exact lengths. The rounding, not the batching,
is where the padding comes from.

`choose(lengths, batch_size, k)` picks the k boundaries that minimise the padded tokens of an
epoch, exactly, by dynamic programming over the histogram of per-batch longest rows (the
batches `batch_plan` makes; the plan's histogram hardly moves between epochs and seeds). The
last boundary is always max_length, so every batch fits. With k=4 on Rotten Tomatoes the
boundaries are (21, 31, 43, 64) and the padding 19.7%; k=8 gives 10.7%, against 13.3% for
bucket_multiple=8 with the same 8 shapes. More buckets trade compile time (one step compile
per shape) for fewer padded tokens: docs/performance.md has the measured whole-run effect.

`train.buckets` is "" (use bucket_multiple), "auto:K" (choose K from the train split) or an
explicit "21,31,43,64".
"""

from __future__ import annotations

import numpy as np

from jaxdistill.data.batching import batch_plan
from jaxdistill.data.errors import DataError


def padded_tokens(batch_max: np.ndarray, boundaries, batch_size: int) -> int:
  """Tokens the step processes when each batch is padded to the smallest boundary >= its max."""
  b = np.asarray(sorted(boundaries))
  return int(b[np.searchsorted(b, batch_max)].sum()) * batch_size


def batch_maxima(lengths: np.ndarray, batch_size: int, *, seed: int = 0, epochs: int = 1) -> np.ndarray:
  """The longest row of every train batch of the first `epochs` epochs."""
  return np.asarray([lengths[rows].max()
                     for e in range(epochs)
                     for rows in batch_plan(lengths, batch_size, train=True, seed=seed, epoch=e,
                                            drop_remainder=len(lengths) >= batch_size)])


def choose(lengths: np.ndarray, batch_size: int, k: int, max_length: int, *, seed: int = 0
           ) -> tuple[int, ...]:
  """The k (or fewer, if the data has fewer distinct batch maxima) boundaries minimising the
  epoch's padded tokens; the last is max_length."""
  if k < 1:
    raise DataError(f"train.buckets=auto:{k}: give at least one bucket, e.g. auto:4")
  maxima = np.minimum(batch_maxima(lengths, batch_size, seed=seed), max_length)
  count = np.bincount(maxima, minlength=max_length + 1)
  below = np.cumsum(count)  # batches whose longest row is <= v
  # cost[j][b]: least tokens/batch_size for the batches with max <= b, using j boundaries, the
  # largest being b. O(k * max_length^2), a few ms for max_length 512.
  inf = np.iinfo(np.int64).max // 4
  cost = np.full((k + 1, max_length + 1), inf, np.int64)
  prev = np.zeros((k + 1, max_length + 1), np.int64)
  cost[0, 0] = 0
  for j in range(1, k + 1):
    for b in range(1, max_length + 1):
      a = np.arange(b)
      cand = np.where(cost[j - 1, :b] < inf, cost[j - 1, :b] + (below[b] - below[a]) * b, inf)
      best = int(np.argmin(cand))
      cost[j, b], prev[j, b] = cand[best], best
  j = int(np.argmin(cost[1:, max_length])) + 1  # fewest-tokens count of boundaries <= k
  out, b = [], max_length
  while j > 0:
    out.append(b)
    b, j = int(prev[j, b]), j - 1
  # Boundaries nothing falls into (empty histogram ranges) are dropped: they cost a compile
  # never, but they make the printed spec confusing.
  kept = [x for x, lo in zip(sorted(out), [0] + sorted(out)[:-1]) if below[x] - below[lo] > 0]
  return tuple(kept if kept and kept[-1] == max_length else kept + [max_length])


def parse(spec: str, lengths: np.ndarray, batch_size: int, max_length: int, *, seed: int = 0):
  """`train.buckets` -> a tuple of boundaries, or None for "" (bucket_multiple applies)."""
  spec = str(spec or "").strip()
  if not spec:
    return None
  if spec.startswith("auto"):
    _, _, k = spec.partition(":")
    try:
      k = int(k or 4)
    except ValueError:
      raise DataError(f"train.buckets={spec!r}: write auto:K with an integer K, e.g. auto:4") from None
    return choose(lengths, batch_size, k, max_length, seed=seed)
  try:
    values = sorted({int(x) for x in spec.split(",") if x.strip()})
  except ValueError:
    raise DataError(f"train.buckets={spec!r}: give 'auto:K' or comma-separated lengths, e.g. 21,31,43,64") from None
  if not values or values[0] < 1:
    raise DataError(f"train.buckets={spec!r}: lengths must be positive, e.g. 21,31,43,64")
  if values[-1] > max_length:
    raise DataError(f"train.buckets={spec!r}: {values[-1]} is over data.max_length={max_length}; "
                    "drop it or raise data.max_length")
  return tuple(values) if values[-1] == max_length else tuple(values + [max_length])
