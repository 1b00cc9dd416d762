"""The types a loss term is made of, kept apart from the registry (train/terms.py) so that
method modules (jaxdistill/methods/*.py) can define terms without importing the registry."""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple, Optional

import jax

from jaxdistill.models import BertConfig, BertOutput, Collect


class Inputs(NamedTuple):
  student: BertOutput
  teacher: Optional[BertOutput]
  batch: dict          # input_ids, attention_mask, token_type_ids, labels, example_weight, ...
  aux: dict            # this term's own parameters ({} if none)
  config: Any          # the run's ConfigDict (static)
  student_cfg: BertConfig
  teacher_cfg: Optional[BertConfig]
  # The models' params (pure dicts), for a term that runs part of a model itself, e.g.
  # DistilBERT's MLM head at the masked positions only instead of all [B, S, V] logits.
  student_params: Optional[dict] = None
  teacher_params: Optional[dict] = None


@dataclasses.dataclass(frozen=True)
class Term:
  """One loss term: `fn(inputs) -> scalar`, and what it needs from the step.

  prepare: (batch, key, config, student_cfg) -> batch, run inside the jitted step before both
  forward passes (e.g. MLM masking: student and teacher then read the same masked ids). The
  key is the step's own stream for this term, a function of (seed, step).
  """
  fn: Callable[[Inputs], jax.Array]
  student: Collect = Collect()
  teacher: Optional[Collect] = None        # None: the term needs no teacher
  init_aux: Optional[Callable] = None      # (key, config, student_cfg, teacher_cfg) -> params
  prepare: Optional[Callable] = None
  # Whether fn reads the teacher's task logits, so the teacher needs a trained classifier
  # (build.build_teacher checks it). False for terms on its encoder or MLM head alone.
  reads_teacher_logits: bool = True
  doc: str = ""
