"""Length buckets chosen from the histogram (jaxdistill/data/buckets.py): the dynamic
programme's boundaries are checked against brute force over every boundary set."""

import itertools

import numpy as np
import pytest

from jaxdistill.data import buckets
from jaxdistill.data.batching import batch_plan, batches, bucket_length
from jaxdistill.data.errors import DataError
from jaxdistill.data.task_data import Split


def _lengths(n=700, max_length=24, seed=0):
  rng = np.random.default_rng(seed)
  return np.clip(rng.gamma(4.0, 2.5, size=n).astype(np.int64) + 2, 2, max_length)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_chosen_boundaries_minimise_padded_tokens_as_brute_force_does(k):
  lengths, max_length, bs = _lengths(), 24, 16
  maxima = buckets.batch_maxima(lengths, bs)
  chosen = buckets.choose(lengths, bs, k, max_length)
  assert chosen[-1] == max_length and len(chosen) <= k
  best = min(buckets.padded_tokens(maxima, tuple(c) + (max_length,), bs)
             for c in itertools.combinations(range(1, max_length), k - 1))
  assert buckets.padded_tokens(maxima, chosen, bs) == best


def test_more_buckets_never_pad_more_and_beat_rounding_with_as_many_shapes():
  lengths, max_length, bs = _lengths(2000, 64, 1) * 2, 64, 32
  lengths = np.minimum(lengths, max_length)
  maxima = buckets.batch_maxima(lengths, bs)
  costs = [buckets.padded_tokens(maxima, buckets.choose(lengths, bs, k, max_length), bs) for k in (1, 2, 4, 8)]
  assert costs == sorted(costs, reverse=True)
  rounded = sum(bucket_length(m, 16, max_length) for m in maxima) * bs  # 4 shapes
  assert costs[2] <= rounded


def test_batches_are_padded_to_the_smallest_boundary_that_holds_them():
  lengths, max_length = _lengths(300, 24, 2), 24
  ids = np.ones((len(lengths), max_length), np.int32)
  split = Split("train", ids, np.zeros_like(ids), lengths.astype(np.int32), np.zeros(len(lengths), np.int32),
                texts=[""] * len(lengths))
  bounds = (9, 14, 24)
  for b in batches(split, 16, train=True, bucket_multiple=bounds, drop_remainder=True):
    s = b["input_ids"].shape[1]
    longest = int(b["attention_mask"].sum(1).max())
    assert s == min(x for x in bounds if x >= longest)


def test_parse_specs_and_one_line_errors():
  lengths = _lengths()
  assert buckets.parse("", lengths, 16, 24) is None
  assert buckets.parse("8,16", lengths, 16, 24) == (8, 16, 24)
  assert buckets.parse("auto:3", lengths, 16, 24) == buckets.choose(lengths, 16, 3, 24)
  for bad, words in [("auto:x", "auto:K"), ("8,x", "comma-separated"), ("8,99", "max_length"),
                     ("0,8", "positive"), ("auto:0", "at least one")]:
    with pytest.raises(DataError, match=words):
      buckets.parse(bad, lengths, 16, 24)


def test_the_trainer_pads_train_batches_to_the_chosen_buckets(tmp_path, monkeypatch):
  from jaxdistill import data as data_lib
  from jaxdistill.pipeline import run
  from jaxdistill.testing import tiny_checkpoint
  from jaxdistill.config_lib import load_config
  teacher = str(tiny_checkpoint(tmp_path / "teacher", num_layers=2, seed=1, label_names=("rotten", "fresh")))
  c = load_config("configs/kd.py:tiny")
  c.teacher.source, c.teacher.finetune = teacher, False
  c.student.source, c.student.init, c.student.layers = teacher, "layers", (0,)
  c.cache_dir, c.report.compression = str(tmp_path / "cache"), False
  c.train.buckets = "auto:2"
  seen, real = [], data_lib.batches

  def spy(split, batch_size, **kw):
    for b in real(split, batch_size, **kw):
      if kw.get("train"):
        seen.append((kw["bucket_multiple"], b["input_ids"].shape[1]))
      yield b
  monkeypatch.setattr(data_lib, "batches", spy)
  run(c, tmp_path / "run")
  assert seen
  bounds = {s[0] for s in seen}
  assert len(bounds) == 1 and isinstance(next(iter(bounds)), tuple) and len(next(iter(bounds))) <= 2
  assert {s[1] for s in seen} <= set(next(iter(bounds)))
