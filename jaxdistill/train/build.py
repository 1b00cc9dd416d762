"""Building the student and teacher a config asks for, as (BertConfig, params) pairs.

Initialising a student from chosen layers of another checkpoint is a pure function on param
dicts (`select_layers`): no model is edited in place.
"""

from __future__ import annotations

import logging
from typing import NamedTuple, Optional

import jax
from flax import nnx

from jaxdistill.models import BertConfig, BertModel, registry
from jaxdistill.models.hub import load_pretrained, params_of

log = logging.getLogger(__name__)


class Built(NamedTuple):
  cfg: BertConfig
  params: dict
  fresh: list[str]   # parameters that were freshly initialised (not from a checkpoint)


def head_overrides(task) -> dict:
  if task.is_regression:
    return dict(problem_type="regression")
  return dict(num_labels=task.num_labels, label_names=tuple(task.label_names or ()))


def select_layers(cfg: BertConfig, params: dict, layers: tuple[int, ...]) -> tuple[BertConfig, dict]:
  """A shallower model made of `layers` (0-based) of `params`; everything else is kept."""
  bad = [i for i in layers if not 0 <= i < cfg.num_layers]
  if bad or not layers:
    raise ValueError(f"student.layers={tuple(layers)}: each must be in 0..{cfg.num_layers - 1} "
                     f"(the source has {cfg.num_layers} layers)")
  new = dict(params)
  new["layers"] = {j: params["layers"][i] for j, i in enumerate(layers)}
  return cfg.replace(num_layers=len(layers)), new


def build_student(config, task, teacher_source: Optional[str]) -> Built:
  s = config.student
  source = s.source or teacher_source
  if not source:
    raise ValueError("student.source is empty and there is no teacher to copy; set "
                     "--config.student.source to a checkpoint directory or 'all-MiniLM-L6-v2'")
  numerics = dict(dtype=config.train.dtype)
  if s.arch != "bert":  # MobileBERT, BiLSTM: jaxdistill/models/registry.py
    cfg, params, fresh = registry.get(s.arch).build_student(config, task, source, head_overrides(task))
    return Built(cfg, params, fresh)
  if s.init == "random":
    model, _ = load_pretrained(source, seed=config.seed, **head_overrides(task), **numerics)
    arch = {k: s[k] for k in ("hidden_size", "num_layers", "num_heads", "intermediate_size") if s[k]}
    cfg = model.config.replace(**arch)
    model = BertModel(cfg, rngs=nnx.Rngs(config.seed))
    return Built(cfg, params_of(model), ["all"])
  if s.init not in ("pretrained", "layers"):
    raise ValueError(f"student.init={s.init!r}; use pretrained, layers or random")
  model, fresh = load_pretrained(source, seed=config.seed, **head_overrides(task), **numerics)
  cfg, params = model.config, params_of(model)
  if s.init == "layers":
    cfg, params = select_layers(cfg, params, tuple(s.layers))
  return Built(cfg, params, fresh)


def build_teacher(source: str, config, task) -> Built:
  model, fresh = load_pretrained(source, seed=config.seed, dtype=config.train.dtype)
  cfg = model.config
  if task.is_regression != (cfg.problem_type == "regression") or (
      not task.is_regression and cfg.num_labels != task.num_labels):
    raise ValueError(f"teacher {source} has a {cfg.problem_type} head with {cfg.num_labels} "
                     f"outputs but the task {task.name!r} needs "
                     f"{'regression' if task.is_regression else f'{task.num_labels} classes'}; "
                     "fine-tune the teacher on this task first (teacher.finetune=True)")
  if cfg.label_names and task.label_names and tuple(cfg.label_names) != tuple(task.label_names):
    raise ValueError(f"teacher labels {cfg.label_names} differ from the task's {tuple(task.label_names)}; "
                     "the label order would silently flip")
  if any(f.startswith("classifier") for f in fresh):
    raise ValueError(f"teacher {source} has no trained classifier; fine-tune it first "
                     "(teacher.finetune=True) or point teacher.source at a fine-tuned checkpoint")
  return Built(cfg, params_of(model), fresh)


def check_pair(student: BertConfig, teacher: BertConfig) -> None:
  """Student and teacher must read the same token ids."""
  if student.vocab_size != teacher.vocab_size:
    raise ValueError(f"student vocab {student.vocab_size} != teacher vocab {teacher.vocab_size}: "
                     "they must share one tokenizer; initialise the student from the teacher's family")


def as_dtype(params: dict, dtype) -> dict:
  return jax.tree_util.tree_map(lambda x: x.astype(dtype), params)
