"""Label name <-> id mapping that can never silently flip the label order.

Rule for classification labels (shared by every source, so GLUE TSV string
labels and HF integer labels land on the same ids):
  1. a label whose text equals a label name maps to that name's position;
  2. otherwise an integer label (int, integral float, or a string of digits)
     within [0, num_labels) is taken as the id itself;
  3. anything else is a DataError naming the row, the label and the allowed names.
Missing labels (None, NaN, empty string) are a DataError naming the row:
a labelled split never silently loses or invents a label.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence

import numpy as np

from jaxdistill.data.errors import DataError, short_repr

logger = logging.getLogger(__name__)

_INT_RE = re.compile(r"^[+-]?\d+$")


def is_missing(value) -> bool:
  if value is None:
    return True
  if isinstance(value, float) and math.isnan(value):
    return True
  return isinstance(value, str) and not value.strip()


def label_key(value) -> str:
  """Canonical text of a label value: '1' for 1, 1.0, ' 1 '; stripped strings otherwise."""
  if isinstance(value, (bool, np.bool_)):
    return str(value).lower()  # JSON true/false -> "true"/"false" (names, never ids)
  if isinstance(value, (int, np.integer)):
    return str(int(value))
  if isinstance(value, (float, np.floating)) and float(value).is_integer():
    return str(int(value))
  return str(value).strip()


def _as_int(key: str) -> int | None:
  return int(key) if _INT_RE.match(key) else None


def _missing_error(where: str, row: int) -> DataError:
  return DataError(f"{where}: row {row} (0-based, header excluded) has no label; add its label or remove the row")


def map_labels(values: Sequence, label_names: Sequence[str], *, where: str) -> np.ndarray:
  """Class ids (int32) for `values` under the rule in the module docstring."""
  name_to_id = {name: i for i, name in enumerate(label_names)}
  num = len(label_names)
  ids = np.empty(len(values), dtype=np.int32)
  for row, value in enumerate(values):
    if is_missing(value):
      raise _missing_error(where, row)
    key = label_key(value)
    idx = name_to_id.get(key)
    if idx is None and not isinstance(value, (bool, np.bool_)):
      as_int = _as_int(key)
      if as_int is not None and 0 <= as_int < num:
        idx = as_int
    if idx is None:
      raise DataError(
          f"{where}: row {row} has label {short_repr(key)}, not among the label names {list(label_names)} "
          f"(or ids 0..{num - 1}); fix the row or list it in config.data.label_names"
      )
    ids[row] = idx
  return ids


def infer_label_names(values: Sequence, *, where: str) -> list[str]:
  """Sorted distinct labels (numerically if all are integers, so '10' follows '9'); logged."""
  keys = set()
  for row, value in enumerate(values):
    if is_missing(value):
      raise _missing_error(where, row)
    keys.add(label_key(value))
  if not keys:
    raise DataError(f"{where}: no labels to infer label names from; set config.data.label_names")
  if all(_as_int(k) is not None for k in keys):
    names = sorted(keys, key=lambda k: (int(k), k))  # "1" vs "01": tie broken by text
  else:
    names = sorted(keys)
  logger.info("inferred label names from %s (id = position): %s", where, names)
  return names


def parse_regression(values: Sequence, *, where: str) -> np.ndarray:
  """Float32 regression targets; missing, non-numeric or non-finite values are errors."""
  out = np.empty(len(values), dtype=np.float32)
  for row, value in enumerate(values):
    if is_missing(value):
      raise _missing_error(where, row)
    try:
      number = float(str(value).strip()) if not isinstance(value, (int, float, np.number)) else float(value)
    except ValueError:
      number = math.nan
    if isinstance(value, (bool, np.bool_)) or not math.isfinite(number):
      raise DataError(f"{where}: row {row} has label {short_repr(value)}, not a finite number; "
                      "regression needs numeric labels")
    out[row] = number
  return out


def to_text(value) -> str:
  """Text cell -> str. Missing cells (None/NaN) become "" (kept, never dropped); numbers keep their text."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return ""
  return value if isinstance(value, str) else str(value)
