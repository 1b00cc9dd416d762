"""Deterministic, resumable, shardable batches of numpy arrays.

Training order for (seed, epoch):
  1. permute all rows with rng(seed, epoch);
  2. set aside the last N % B permuted rows as the one incomplete batch
     (so a dropped/padded remainder is a random set, not the longest rows);
  3. cut the rest into chunks of `chunk_batches` batches, stable-sort each
     chunk by token length and slice it into batches (similar lengths share a
     batch, so little padding), then
  4. shuffle the batch order with the same rng.
Evaluation order is the original row order; no row is ever dropped.

Each batch is padded to B rows: padding rows copy the batch's first real row
(so no row has an all-zero attention mask, which would NaN a softmax) and get
example_weight 0 and index -1. Sequence length S is the longest real row
rounded up to `bucket_multiple` (or to the next of the boundaries data/buckets.py
chose from the length histogram), capped at max_length, so jit sees few shapes.
With num_shards > 1, S and the row plan are computed for the *global* batch
and each process gets its contiguous B/num_shards slice: shapes agree across
hosts and the union of the shards is exactly the single-host batch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from jaxdistill.data.errors import DataError
from jaxdistill.data.task_data import Split

DEFAULT_CHUNK_BATCHES = 50


def _positive_int(name: str, value) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise DataError(f"{name} must be a positive int, got {value!r}")
  return int(value)


def num_batches(split: Split, batch_size: int, *, train: bool, drop_remainder: bool = False) -> int:
  """Batches per epoch for `batches(split, batch_size, train=train, drop_remainder=...)`."""
  n, batch_size = len(split), _positive_int("batch_size", batch_size)
  if not train and drop_remainder:
    raise DataError("drop_remainder=True is only for training; evaluation never drops examples, pass False")
  if train and drop_remainder:
    if n < batch_size:
      raise DataError(
          f"split {split.name!r} has {n} examples, fewer than batch_size={batch_size} with drop_remainder=True "
          "(an epoch would be empty); add examples or lower the batch size (--config.train.batch_size)"
      )
    return n // batch_size
  return -(-n // batch_size)


def batch_plan(
    lengths: np.ndarray,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    epoch: int = 0,
    drop_remainder: bool = False,
    chunk_batches: int = DEFAULT_CHUNK_BATCHES,
) -> list[np.ndarray]:
  """Row indices of every batch of one epoch (each of length <= batch_size)."""
  n = len(lengths)
  if not train:
    return [np.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
  if isinstance(seed, bool) or isinstance(epoch, bool) or min(int(seed), int(epoch)) < 0:
    raise DataError(f"seed and epoch must be non-negative ints, got seed={seed!r}, epoch={epoch!r}")
  rng = np.random.default_rng([int(seed), int(epoch)])
  perm = rng.permutation(n)
  n_full = n - n % batch_size
  plan: list[np.ndarray] = []
  chunk = chunk_batches * batch_size
  for start in range(0, n_full, chunk):
    rows = perm[start : min(start + chunk, n_full)]
    rows = rows[np.argsort(lengths[rows], kind="stable")]
    plan.extend(rows[i : i + batch_size] for i in range(0, len(rows), batch_size))
  if n_full < n and not drop_remainder:
    plan.append(perm[n_full:])
  return [plan[k] for k in rng.permutation(len(plan))]


def bucket_length(max_len_in_batch: int, bucket_multiple, max_length: int) -> int:
  """The batch's padded length: the longest row rounded up to a multiple of `bucket_multiple`,
  or, given a tuple of boundaries (data/buckets.py), the smallest boundary that holds it."""
  longest = max(int(max_len_in_batch), 1)
  if isinstance(bucket_multiple, tuple):
    return min(max_length, next((b for b in bucket_multiple if b >= longest), max_length))
  return min(max_length, -(-longest // bucket_multiple) * bucket_multiple)


def batches(
    split: Split,
    batch_size: int,
    *,
    train: bool,
    seed: int = 0,
    epoch: int = 0,
    start_batch: int = 0,
    bucket_multiple: int | tuple[int, ...] = 16,
    drop_remainder: bool = False,
    shard_index: int = 0,
    num_shards: int = 1,
    chunk_batches: int = DEFAULT_CHUNK_BATCHES,
) -> Iterator[dict[str, np.ndarray]]:
  """Yield this process's part of each global batch of size `batch_size`.

  Keys: input_ids, attention_mask, token_type_ids int32 [B/num_shards, S];
  labels int32 (float32 for regression) [B/num_shards]; example_weight float32
  (0 on padding rows); index int32 (row in the split, -1 on padding rows).
  `start_batch=k` resumes mid-epoch: identical to skipping the first k batches.
  """
  total = num_batches(split, batch_size, train=train, drop_remainder=drop_remainder)
  if isinstance(bucket_multiple, (tuple, list)):  # explicit boundaries (data/buckets.py)
    bucket_multiple = tuple(sorted(_positive_int("bucket boundary", b) for b in bucket_multiple))
  else:
    bucket_multiple = _positive_int("bucket_multiple", bucket_multiple)
  chunk_batches = _positive_int("chunk_batches", chunk_batches)
  num_shards = _positive_int("num_shards", num_shards)
  if batch_size % num_shards:
    raise DataError(f"batch_size={batch_size} is not divisible by num_shards={num_shards}; "
                    f"use a multiple of {num_shards}")
  if isinstance(shard_index, bool) or not 0 <= shard_index < num_shards:
    raise DataError(f"shard_index={shard_index!r} must be in [0, num_shards={num_shards}); "
                    "pass jax.process_index()")
  if isinstance(start_batch, bool) or not 0 <= start_batch <= total:
    raise DataError(f"start_batch={start_batch!r} must be in [0, {total}] (batches per epoch); "
                    "check the resume step")
  plan = batch_plan(split.lengths, batch_size, train=train, seed=seed, epoch=epoch,
                    drop_remainder=drop_remainder, chunk_batches=chunk_batches)
  per_shard = batch_size // num_shards
  lo, hi = shard_index * per_shard, (shard_index + 1) * per_shard
  positions = np.arange(split.max_length)
  for rows in plan[start_batch:]:
    real = len(rows)
    seq = bucket_length(split.lengths[rows].max(), bucket_multiple, split.max_length)
    padded = np.concatenate([rows, np.full(batch_size - real, rows[0], rows.dtype)])
    weight = (np.arange(batch_size) < real).astype(np.float32)
    index = np.where(weight > 0, padded, -1).astype(np.int32)
    mine = padded[lo:hi]
    labels = split.labels[mine]
    if labels.ndim == 2 and labels.shape[1] == split.max_length:  # per-token labels (NER)
      labels = labels[:, :seq]
    yield {
        "input_ids": split.input_ids[mine, :seq].astype(np.int32, copy=False),
        "attention_mask": (positions[None, :seq] < split.lengths[mine][:, None]).astype(np.int32),
        "token_type_ids": split.token_type_ids[mine, :seq].astype(np.int32, copy=False),
        "labels": labels,
        "example_weight": weight[lo:hi],
        "index": index[lo:hi],
    }
