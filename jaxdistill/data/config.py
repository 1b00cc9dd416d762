"""The `config.data` block: defaults and value validation.

Unknown keys are the config system's job; here we check that every value we
use has a sane type/range and turn the ConfigDict (or plain dict) into a frozen
`DataSpec`, so sources never read half-validated config.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping

import ml_collections

from jaxdistill.data.errors import DataError, short_repr

logger = logging.getLogger(__name__)

# Smallest max_length that still fits [CLS] a [SEP] b [SEP] with a token or two each.
MIN_MAX_LENGTH = 8


def default_data_config() -> ml_collections.ConfigDict:
  """All `config.data` keys with their defaults (see module docs of jaxdistill.data)."""
  return ml_collections.ConfigDict(
      dict(
          task="rotten_tomatoes",  # rotten_tomatoes | amazon_food | squad | wnut16 | files | glue/<name>
          path="",  # GLUE directory for glue tasks; "" = Hugging Face hub (needs network)
          train_file="",  # task="files": one file per split (csv/tsv/json/jsonl/parquet)
          dev_file="",
          test_file="",
          text_column="text",  # task="files" only
          text_pair_column="",  # task="files" only; "" = single-segment task
          label_column="label",  # task="files" only
          label_names=(),  # task="files": explicit name->id order; () = infer (sorted)
          is_regression=False,  # task="files": float labels, no label names
          max_length=64,  # tokens incl. special tokens; longer inputs are truncated
          max_examples=0,  # 0 = all; else keep the first N rows of every split
          # squad / wnut16: the first N examples of dev and test (0 = all; max_examples then
          # cuts train alone), and SQuAD's window overlap in tokens.
          max_eval_examples=0,
          doc_stride=128,
          # A file (csv/tsv/json/jsonl/parquet) replacing the train split of any task, e.g.
          # augmented data: the task's text column(s) and, optionally, its label column;
          # rows without a label are unlabelled (label -1: no hard loss, distillation only).
          train_override="",
      )
  )


@dataclasses.dataclass(frozen=True)
class DataSpec:
  task: str
  path: str = ""
  train_file: str = ""
  dev_file: str = ""
  test_file: str = ""
  text_column: str = "text"
  text_pair_column: str = ""
  label_column: str = "label"
  label_names: tuple[str, ...] = ()
  is_regression: bool = False
  max_length: int = 64
  max_examples: int = 0
  max_eval_examples: int = 0
  doc_stride: int = 128
  train_override: str = ""

  def files_by_split(self) -> dict[str, str]:
    pairs = (("train", self.train_file), ("dev", self.dev_file), ("test", self.test_file))
    return {split: path for split, path in pairs if path}


def _as_mapping(cfg) -> Mapping:
  if isinstance(cfg, DataSpec):
    return dataclasses.asdict(cfg)
  if isinstance(cfg, ml_collections.ConfigDict):
    cfg = cfg.to_dict()
  if not isinstance(cfg, Mapping):
    raise DataError(f"data config must be a ConfigDict or dict, got {type(cfg).__name__}; pass config.data")
  # Accept the whole experiment config too, for convenience.
  if "task" not in cfg and isinstance(cfg.get("data"), Mapping):
    cfg = cfg["data"]
  return cfg


def _check_type(key, value, types, what):
  # bool is an int subclass; `max_length=True` is never what anyone meant.
  if not isinstance(value, types) or (types is int and isinstance(value, bool)):
    raise DataError(f"config.data.{key} must be {what}, got {short_repr(value)}; fix the config value")
  return value


def parse_data_config(cfg) -> DataSpec:
  """Validate values of a data config (ConfigDict/dict/DataSpec) and return a DataSpec."""
  raw = dict(_as_mapping(cfg))
  known = {f.name for f in dataclasses.fields(DataSpec)}
  unknown = sorted(set(raw) - known)
  if unknown:
    logger.warning("ignoring unknown config.data keys %s (known: %s)", unknown, sorted(known))
  values = {k: raw[k] for k in known if k in raw}
  if "task" not in values:
    raise DataError("config.data.task is missing; set it to 'rotten_tomatoes', 'amazon_food', 'files' or 'glue/<name>'")

  for key in ("task", "path", "train_file", "dev_file", "test_file",
              "text_column", "text_pair_column", "label_column", "train_override"):
    if key in values:
      values[key] = _check_type(key, values[key] if values[key] is not None else "", str, "a string").strip()
  for key in ("max_length", "max_examples", "max_eval_examples", "doc_stride"):
    if key in values:
      _check_type(key, values[key], int, "an int")
  if "is_regression" in values:
    _check_type("is_regression", values["is_regression"], bool, "a bool")

  names = values.get("label_names") or ()
  if isinstance(names, str) or not all(isinstance(n, str) and n.strip() for n in names):
    raise DataError(
        f"config.data.label_names must be a list of non-empty strings, got {short_repr(names)}; "
        "e.g. ['negative', 'positive'] (position = label id)"
    )
  names = tuple(n.strip() for n in names)
  if len(set(names)) != len(names):
    raise DataError(f"config.data.label_names has duplicates: {list(names)}; each label name must be unique")
  values["label_names"] = names

  spec = DataSpec(**values)
  if spec.max_length < MIN_MAX_LENGTH:
    raise DataError(f"config.data.max_length={spec.max_length} is too small; "
                    f"use at least {MIN_MAX_LENGTH} (e.g. 64 or 128)")
  if spec.max_examples < 0:
    raise DataError(f"config.data.max_examples={spec.max_examples} is negative; use 0 for all rows or N > 0")
  if spec.is_regression and spec.label_names:
    raise DataError("config.data.is_regression=True conflicts with label_names; "
                    "regression has no label names, drop one")
  return spec
