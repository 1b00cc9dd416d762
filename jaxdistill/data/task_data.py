"""Containers for loaded data: raw (texts + label ids) and tokenised (numpy arrays).

Raw containers are what each source (Rotten Tomatoes, GLUE, local files)
produces; tokenisation turns a RawTask into a TaskData. Keeping the raw texts
in the tokenised Split lets later stages (augmentation, inspection) see exactly
what the model saw before tokenisation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from jaxdistill.data.errors import DataError

# Label value used for rows of unlabelled splits (e.g. GLUE test sets).
UNLABELLED = -1

# MNLI-style tasks have no plain "dev"/"test"; these aliases resolve them.
SPLIT_ALIASES = {"dev": ("dev_matched",), "test": ("test_matched",), "validation": ("dev", "dev_matched")}


@dataclasses.dataclass
class RawSplit:
  """One split before tokenisation: texts, optional second segments and label ids."""

  name: str
  texts: list[str]
  text_pairs: list[str] | None
  labels: np.ndarray  # int32 ids (UNLABELLED if has_labels is False) or float32 scores
  has_labels: bool = True

  def __len__(self) -> int:
    return len(self.texts)

  def head(self, n: int) -> "RawSplit":
    """First n rows (deterministic truncation for tiny runs); n <= 0 keeps all."""
    if n <= 0 or n >= len(self):
      return self
    pairs = None if self.text_pairs is None else self.text_pairs[:n]
    return RawSplit(self.name, self.texts[:n], pairs, self.labels[:n], self.has_labels)


@dataclasses.dataclass
class RawTask:
  name: str
  label_names: list[str] | None
  is_regression: bool
  splits: dict[str, RawSplit]
  text_columns: tuple[str, ...]


@dataclasses.dataclass
class Source:
  """A resolved task: what identifies its inputs (for the cache key) and how to read them.

  `fingerprint` must change whenever the data could (paths + mtimes + sizes),
  and `read` does the (possibly slow) parsing only when the cache misses.
  """

  name: str
  fingerprint: list
  read: Callable[[], RawTask]


@dataclasses.dataclass
class Split:
  """One tokenised split. Token arrays are right-padded to max_length.

  attention_mask is not stored: with right padding it is exactly
  ``arange(max_length) < lengths[:, None]``, which `batches` builds per batch.
  """

  name: str
  input_ids: np.ndarray  # [N, max_length] int32, pad id after `lengths`
  token_type_ids: np.ndarray  # [N, max_length] int32, 1 on the second segment
  lengths: np.ndarray  # [N] int32, number of real tokens (incl. [CLS]/[SEP])
  labels: np.ndarray  # [N] int32 class ids, or float32 for regression
  texts: list[str]
  text_pairs: list[str] | None = None
  has_labels: bool = True  # False for unlabelled splits (labels all UNLABELLED / NaN)

  def __len__(self) -> int:
    return int(self.input_ids.shape[0])

  @property
  def max_length(self) -> int:
    return int(self.input_ids.shape[1])

  @property
  def attention_mask(self) -> np.ndarray:
    return (np.arange(self.max_length)[None, :] < self.lengths[:, None]).astype(np.int32)


class SplitNotFound(DataError, KeyError):
  """A requested split does not exist (a KeyError too, so `except KeyError` still works)."""

  def __str__(self) -> str:  # KeyError would print the message in quotes
    return str(self.args[0])


def resolve_split_name(name: str, available) -> str:
  """Map a requested split name to an existing one ("dev" -> "dev_matched" for MNLI)."""
  available = list(available)
  if name in available:
    return name
  for alias in SPLIT_ALIASES.get(name, ()):
    if alias in available:
      return alias
  raise SplitNotFound(f"split {name!r} not found; available splits: {available}")


class Splits(dict):
  """dict of Split by name where splits["dev"] also finds MNLI's "dev_matched".

  Aliases resolve only on lookup: iteration, len() and `in` see the real
  splits, so evaluating "every split" never evaluates one twice.
  """

  def __missing__(self, name):
    return self[resolve_split_name(name, self.keys())]


@dataclasses.dataclass
class TaskData:
  name: str
  label_names: list[str] | None
  is_regression: bool
  splits: dict[str, Split]  # a Splits: splits["dev"] works for MNLI too
  text_columns: tuple[str, ...]
  # The head the task needs: "sequence" (labels [N]), "token" (labels [N, S], -100 = not
  # scored) or "span" (labels [N, 2]: start and end token). `meta`: per split, what its
  # evaluation needs beyond the arrays (data/token_span_tasks.py).
  kind: str = "sequence"
  meta: dict = dataclasses.field(default_factory=dict)

  @property
  def num_labels(self) -> int:
    """Output width of the task head: 1 for regression, else the number of classes."""
    return 1 if self.is_regression else len(self.label_names or ())

  @property
  def is_pair(self) -> bool:
    return len(self.text_columns) == 2

  def __post_init__(self):
    self.splits = Splits(self.splits)
