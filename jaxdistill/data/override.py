"""`config.data.train_override`: a file that replaces a task's train split (augmented data).

The file has the task's text column(s) (`text`, or the task's own names, e.g. GLUE's
`sentence1`/`sentence2`; for task="files", config.data.text_column) and optionally its label
column (`label`, or config.data.label_column). A row whose label is missing or empty is
unlabelled: label -1 (NaN for regression), which the hard-label loss skips, so augmented
rows teach through the teacher alone. Labels are names or ids, as in the task's own files.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxdistill.data import labels as labels_lib
from jaxdistill.data.config import DataSpec
from jaxdistill.data.errors import DataError
from jaxdistill.data.files import check_file, file_fingerprint, read_table, require_columns
from jaxdistill.data.task_data import UNLABELLED, RawSplit, RawTask, Source


def _label_column(spec: DataSpec) -> str:
  return spec.label_column if spec.task == "files" else "label"


def read_override(spec: DataSpec, raw: RawTask) -> RawSplit:
  path = spec.train_override
  columns, _ = read_table(path, "config.data.train_override")
  where = f"config.data.train_override {path!r}"
  require_columns(columns, raw.text_columns, where=where)
  n = len(columns[raw.text_columns[0]])
  if n == 0:
    raise DataError(f"{where} has no rows; regenerate it or set config.data.train_override=''")
  texts = [labels_lib.to_text(v) for v in columns[raw.text_columns[0]]]
  pairs = ([labels_lib.to_text(v) for v in columns[raw.text_columns[1]]]
           if len(raw.text_columns) > 1 else None)
  values = columns.get(_label_column(spec), [None] * n)
  present = [i for i, v in enumerate(values) if not labels_lib.is_missing(v)]
  if raw.is_regression:
    labels = np.full(n, np.nan, np.float32)
    if present:
      labels[present] = labels_lib.parse_regression([values[i] for i in present], where=where)
  else:
    labels = np.full(n, UNLABELLED, np.int32)
    if present:
      labels[present] = labels_lib.map_labels([values[i] for i in present], raw.label_names or [],
                                              where=where)
  return RawSplit("train", texts, pairs, labels, has_labels=True).head(spec.max_examples)


def with_train_override(spec: DataSpec, source: Source) -> Source:
  """`source` with its train split read from spec.train_override (if set)."""
  if not spec.train_override:
    return source
  check_file(spec.train_override, "config.data.train_override")

  def read() -> RawTask:
    raw = source.read()
    return dataclasses.replace(raw, splits={**raw.splits, "train": read_override(spec, raw)})

  return Source(source.name, [*source.fingerprint, file_fingerprint(spec.train_override)], read)
