"""Batching: eval covers every row once in order, train order is a deterministic function
of (seed, epoch), resuming with start_batch and sharding reproduce the single-run batches,
and sequence lengths are bucketed."""

import numpy as np
import pytest

from jaxdistill.data import DataError, Split, batch_plan, batches, num_batches

MAX_LEN = 40


def make_split(n, *, seed=0, regression=False, max_length=MAX_LEN):
  """A synthetic tokenised split: row i holds token i + 1000 at every real position."""
  rng = np.random.default_rng(seed)
  lengths = rng.integers(2, max_length + 1, size=n).astype(np.int32)
  positions = np.arange(max_length)[None, :]
  real = positions < lengths[:, None]
  input_ids = np.where(real, np.arange(n)[:, None] + 1000, 0).astype(np.int32)
  token_type_ids = (real & (positions >= lengths[:, None] // 2)).astype(np.int32)
  labels = rng.normal(size=n).astype(np.float32) if regression else rng.integers(0, 3, n).astype(np.int32)
  return Split("train", input_ids, token_type_ids, lengths, labels, [f"text {i}" for i in range(n)])


def collect(split, batch_size, **kw):
  return list(batches(split, batch_size, **kw))


def check_batch_contents(split, batch):
  """Every row of a batch is the split row its index names (padding rows copy a real one)."""
  seq = batch["input_ids"].shape[1]
  rows = np.where(batch["index"] >= 0, batch["index"], -1)
  for r, i in enumerate(rows):
    if i < 0:
      assert batch["example_weight"][r] == 0
      continue
    np.testing.assert_array_equal(batch["input_ids"][r], split.input_ids[i, :seq])
    np.testing.assert_array_equal(batch["token_type_ids"][r], split.token_type_ids[i, :seq])
    np.testing.assert_array_equal(batch["attention_mask"][r], np.arange(seq) < split.lengths[i])
    assert batch["labels"][r] == split.labels[i]
  assert batch["attention_mask"].sum(axis=1).min() >= 1  # no fully masked row, even padding


@pytest.mark.parametrize("n,batch_size", [(1, 8), (37, 8), (101, 16), (64, 16), (5, 32)])
def test_eval_batches_cover_every_example_once_in_order(n, batch_size):
  split = make_split(n)
  out = collect(split, batch_size, train=False)
  assert len(out) == num_batches(split, batch_size, train=False) == -(-n // batch_size)
  weights = np.concatenate([b["example_weight"] for b in out])
  index = np.concatenate([b["index"] for b in out])
  assert weights.sum() == n
  np.testing.assert_array_equal(index[weights > 0], np.arange(n))
  assert (index[weights == 0] == -1).all()
  for b in out:
    assert b["input_ids"].shape[0] == batch_size
    assert {k: v.dtype for k, v in b.items()} == {
        "input_ids": np.int32, "attention_mask": np.int32, "token_type_ids": np.int32,
        "labels": np.int32, "example_weight": np.float32, "index": np.int32}
    check_batch_contents(split, b)


def test_regression_labels_are_float32():
  b = next(batches(make_split(10, regression=True), 4, train=False))
  assert b["labels"].dtype == np.float32


@pytest.mark.parametrize("bucket_multiple", [16, 8, 7])
def test_sequence_length_is_bucketed(bucket_multiple):
  split = make_split(200, seed=3)
  for b in collect(split, 16, train=True, bucket_multiple=bucket_multiple):
    seq = b["input_ids"].shape[1]
    longest = int(split.lengths[b["index"][b["index"] >= 0]].max())
    assert seq == min(MAX_LEN, -(-longest // bucket_multiple) * bucket_multiple)
    assert seq % bucket_multiple == 0 or seq == MAX_LEN
    assert b["attention_mask"].shape == b["token_type_ids"].shape == (16, seq)


def test_train_order_is_deterministic_per_seed_and_epoch():
  split = make_split(203)
  order = lambda **kw: np.concatenate([b["index"] for b in batches(split, 16, train=True, **kw)])
  np.testing.assert_array_equal(order(seed=1, epoch=2), order(seed=1, epoch=2))
  assert not np.array_equal(order(seed=1, epoch=2), order(seed=1, epoch=3))
  assert not np.array_equal(order(seed=1, epoch=2), order(seed=2, epoch=2))


def test_train_epoch_sees_every_example_once_and_padding_rows_are_weight_zero():
  split = make_split(203)
  out = collect(split, 16, train=True, seed=4)
  assert len(out) == num_batches(split, 16, train=True) == 13
  index = np.concatenate([b["index"] for b in out])
  weights = np.concatenate([b["example_weight"] for b in out])
  np.testing.assert_array_equal(np.sort(index[weights > 0]), np.arange(203))
  assert weights.sum() == 203 and (index[weights == 0] == -1).all()
  for b in out:
    check_batch_contents(split, b)


def test_drop_remainder_drops_only_the_one_incomplete_batch():
  split = make_split(203)
  out = collect(split, 16, train=True, drop_remainder=True)
  assert len(out) == num_batches(split, 16, train=True, drop_remainder=True) == 203 // 16
  index = np.concatenate([b["index"] for b in out])
  assert len(set(index.tolist())) == len(index) == 12 * 16
  assert all(b["example_weight"].min() == 1 for b in out)


def test_batches_group_similar_lengths():
  """Sorting within chunks must cut padding well below a random order's."""
  split = make_split(1600, seed=5)
  plan = batch_plan(split.lengths, 16, train=True, seed=0)
  sorted_cost = sum(split.lengths[rows].max() for rows in plan)
  rng = np.random.default_rng(0)
  random_cost = sum(split.lengths[rows].max() for rows in np.split(rng.permutation(1600), 100))
  assert sorted_cost < 0.8 * random_cost


@pytest.mark.parametrize("k", [0, 1, 5, 12, 13])
def test_start_batch_equals_skipping(k):
  split = make_split(203)
  full = collect(split, 16, train=True, seed=7, epoch=1)
  resumed = collect(split, 16, train=True, seed=7, epoch=1, start_batch=k)
  assert len(resumed) == len(full) - k
  for a, b in zip(full[k:], resumed):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("train", [True, False])
def test_shards_partition_each_global_batch(train):
  split = make_split(75)
  full = collect(split, 16, train=train, seed=3)
  shards = [collect(split, 16, train=train, seed=3, shard_index=i, num_shards=4) for i in range(4)]
  assert all(len(s) == len(full) for s in shards)
  for step, global_batch in enumerate(full):
    for key, value in global_batch.items():
      parts = [s[step][key] for s in shards]
      assert all(p.shape[0] == 4 for p in parts)
      np.testing.assert_array_equal(np.concatenate(parts), value)


def test_batch_option_errors_name_the_fix():
  split = make_split(20)
  with pytest.raises(DataError, match="not divisible by num_shards=3"):
    next(batches(split, 16, train=True, num_shards=3))
  with pytest.raises(DataError, match="shard_index"):
    next(batches(split, 16, train=True, num_shards=2, shard_index=2))
  with pytest.raises(DataError, match="start_batch"):
    next(batches(split, 8, train=True, start_batch=4))
  with pytest.raises(DataError, match="only for training"):
    next(batches(split, 8, train=False, drop_remainder=True))
  with pytest.raises(DataError, match="fewer than batch_size=32"):
    num_batches(split, 32, train=True, drop_remainder=True)
  with pytest.raises(DataError, match="batch_size must be a positive int"):
    num_batches(split, 0, train=False)
  with pytest.raises(DataError, match="bucket_multiple"):
    next(batches(split, 8, train=False, bucket_multiple=0))
