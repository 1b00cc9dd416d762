"""BERT-PKD (Sun et al. 2019): patient knowledge distillation from intermediate layers, as
the loss term `pkd`.

    pkd = sum_(i, j) in layer map  || h_s^i[CLS] / |h_s^i[CLS]|  -  h_t^j[CLS] / |h_t^j[CLS]| ||^2

over `pkd.layer_map` (skip: every k-th teacher layer; last: the top ones; uniform;
explicit `pkd.pairs`), with a learned [H_s, H_t] projection when the widths differ.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxdistill import losses
from jaxdistill.core.outputs import Collect
from jaxdistill.methods.base import Inputs, Term, register_term

CONFIG = dict(layer_map="skip", pairs=())


def projection(key, s_width: int, t_width: int) -> dict:
  """A learned [H_s, H_t] map when widths differ (TinyBERT's W_h); none when they match."""
  if s_width == t_width:
    return {}
  return {"kernel": jax.random.normal(key, (s_width, t_width)) * (1.0 / jnp.sqrt(s_width)),
          "bias": jnp.zeros((t_width,))}


@register_term("pkd")
@dataclasses.dataclass(frozen=True)
class PKD(Term):
  layer_map: str = "skip"
  pairs: tuple = ()
  doc = "BERT-PKD normalised [CLS] MSE over pkd.layer_map"
  student = Collect(hidden_states=True)
  teacher = Collect(hidden_states=True)

  @classmethod
  def from_config(cls, config):
    return cls(str(config.pkd.layer_map), tuple(tuple(p) for p in config.pkd.pairs))

  def layer_pairs(self, student_cfg, teacher_cfg) -> list[tuple[int, int]]:
    """(student, teacher) hidden-state indices (1 = first layer's output)."""
    pairs = losses.make_layer_map(self.layer_map, student_cfg.num_layers, teacher_cfg.num_layers,
                                  pairs=list(self.pairs) or None)
    if not pairs:
      raise ValueError(f"pkd.layer_map={self.layer_map!r} pairs no layers of a "
                       f"{student_cfg.num_layers}-layer student with a {teacher_cfg.num_layers}-layer "
                       "teacher; use a deeper student, pkd.layer_map=uniform, or pkd.pairs")
    return pairs

  def init_params(self, key, student_cfg, teacher_cfg) -> dict:
    self.layer_pairs(student_cfg, teacher_cfg)  # a bad map fails at setup, not at step 1
    return projection(key, student_cfg.hidden_size, teacher_cfg.hidden_size)

  def __call__(self, x: Inputs) -> jax.Array:
    return losses.pkd_loss(x.student.hidden_states, x.teacher.hidden_states,
                           self.layer_pairs(x.student_cfg, x.teacher_cfg),
                           projection_kernel=x.aux.get("kernel"), projection_bias=x.aux.get("bias"),
                           example_weight=x.batch["example_weight"])
