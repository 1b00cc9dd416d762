"""Student architectures other than BERT (MobileBERT's bottleneck encoder, a BiLSTM), behind
the one interface the trainer uses.

An architecture is a module `jaxdistill.models.<name>` with `ARCH = Arch(...)`, imported on
first use. Its config class carries `arch = "<name>"` (BertConfig has none: "bert"), and its
model is called like BertModel:

    model(input_ids, attention_mask, token_type_ids, *, dropout_key=None, collect=Collect())
        -> BertOutput  (logits always; internals as far as the architecture has them)

How a run's config builds such a student is the methods layer's business
(`methods.base.register_student_arch`): models take only their own dataclass configs.

Checkpoints are written by `hub.save_pretrained` with `"jaxdistill_arch": "<name>"` in
config.json, which `hub.load_pretrained` reads to pick the loader.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Callable

from jaxdistill.models.bert import BertModel

ARCH_KEY = "jaxdistill_arch"
MODULES = {"mobilebert": "jaxdistill.models.mobilebert", "bilstm": "jaxdistill.models.bilstm"}


@dataclasses.dataclass(frozen=True)
class Arch:
  name: str
  model_cls: type
  # (model_dir: Path, hf-style config dict, seed, head overrides) -> (model, fresh)
  load: Callable[..., tuple[Any, list[str]]]
  # (cfg, host params, out_dir: Path) -> None: writes config.json (with ARCH_KEY) + weights
  save: Callable[..., None]


def names() -> tuple[str, ...]:
  return ("bert", *MODULES)


def get(name: str) -> Arch:
  if name not in MODULES:
    raise ValueError(f"student.arch={name!r}; use one of {', '.join(names())}")
  return importlib.import_module(MODULES[name]).ARCH


def arch_name(cfg) -> str:
  return getattr(cfg, "arch", "bert")


def model_class(cfg) -> type:
  """The nnx.Module class that `cfg` configures."""
  name = arch_name(cfg)
  if name == "bert":
    return BertModel
  return get(name).model_cls


def arch_of_checkpoint(config_dict: dict) -> str:
  return config_dict.get(ARCH_KEY, "bert")

