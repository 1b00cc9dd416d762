"""LAD: Layer-wise Adaptive Distillation for BERT model compression (Lin et al., Sensors 2023;
code IKMLab/LAD), as the loss term `lad`.

Gate blocks fold the teacher's layer outputs h_1..h_L into aggregates, in order:

    a_1 = h_1
    g_i = sigmoid(W_i a_{i-1} + b_i)                          (per token, [H] gates)
    a_i = LayerNorm(g_i * h_i + (1 - g_i) * a_{i-1})          i = 2..k*n

and student layer j (of n) is matched by MSE to the aggregate at teacher depth k*j,
k = L // n (the thesis code's `range(skip - 1, L, skip)`), so no teacher layer is skipped:

    lad = 1/n * sum_j  MSE(P(s_j), a_{k*j})

P is a learned [H_s, H_t] projection when the widths differ (as pkd's), none otherwise.
The gates (and P) are the term's own params (`init_aux`): they train with the student at
`optim.aux_lr` (the thesis: lr 1e-4, gate lr 1e-6) and get gradients through the aggregates,
while the teacher's hidden states arrive stop_gradient'ed from the step. The thesis mixes
this with soft targets and labels: losses.hard_ce, losses.kd, losses.lad (configs/lad.py).

Padding. The thesis' LayerNorm spans the whole padded [S, H] block (its statistics, and
its learned [S, H] affine, depend on how much padding a batch has) and its MSE averages over
padding too. Here the LayerNorm is per token over the hidden axis, so a real token's
aggregate is unaffected by padding, and the MSE averages over real tokens only (weighted by
example_weight, tinybert_hidden_loss's reduction).

LayerNorm params: none by default (`lad.learnable_norm=False`). The gates minimise the same
MSE the student does, so a learned scale could shrink the targets towards a constant the
student matches trivially; a plain normalisation keeps every aggregate at unit scale.
`lad.learnable_norm=True` adds a per-gate [H] scale and offset (the thesis' affine, per token).
Gate init: W Xavier-uniform (as the thesis), b = 0.
"""

from __future__ import annotations

from typing import Sequence

import dataclasses

import jax
import jax.numpy as jnp

from jaxdistill import losses
from jaxdistill.core.outputs import Collect
from jaxdistill.methods.base import Inputs, Term, register, register_term
from jaxdistill.methods.distill import Distill
from jaxdistill.models import BertConfig

CONFIG = dict(learnable_norm=False)
LN_EPS = 1e-5  # torch.nn.LayerNorm's default, which the thesis' gates use


def layer_stride(student_layers: int, teacher_layers: int) -> int:
  """k: student layer j is matched to the aggregate of teacher layers 1..k*j."""
  if not 1 <= student_layers <= teacher_layers:
    raise ValueError(f"LAD: a {student_layers}-layer student cannot be matched to a "
                     f"{teacher_layers}-layer teacher; the student needs 1..{teacher_layers} layers")
  return teacher_layers // student_layers


def init_gates(key, s: BertConfig, t: BertConfig, *, learnable_norm: bool = False) -> dict:
  """Gate params {"gates": {"2": {kernel [H,H], bias [H] (, scale, offset)}, ...}} for
  i = 2..k*n, plus {"proj": {kernel, bias}} when the widths differ."""
  depth = layer_stride(s.num_layers, t.num_layers) * s.num_layers
  h = t.hidden_size
  limit = (6.0 / (h + h)) ** 0.5  # Xavier uniform
  gates = {}
  for i in range(2, depth + 1):
    g = {"kernel": jax.random.uniform(jax.random.fold_in(key, i), (h, h), jnp.float32, -limit, limit),
         "bias": jnp.zeros((h,), jnp.float32)}
    if learnable_norm:
      g["scale"], g["offset"] = jnp.ones((h,), jnp.float32), jnp.zeros((h,), jnp.float32)
    gates[str(i)] = g
  aux = {"gates": gates}
  if s.hidden_size != t.hidden_size:  # same pattern as pkd.projection (TinyBERT's W_h)
    aux["proj"] = {"kernel": jax.random.normal(jax.random.fold_in(key, 0), (s.hidden_size, h))
                             / jnp.sqrt(s.hidden_size), "bias": jnp.zeros((h,), jnp.float32)}
  return aux


def _layer_norm(x, gate: dict):
  mean = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
  y = (x - mean) * jax.lax.rsqrt(var + LN_EPS)
  if "scale" in gate:
    y = y * gate["scale"] + gate["offset"]
  return y


def aggregate(teacher_layers: Sequence[jax.Array], gates: dict) -> list[jax.Array]:
  """[a_1, ..., a_D] from the teacher's layer outputs h_1..h_D (embeddings excluded)."""
  a = jnp.asarray(teacher_layers[0], jnp.float32)
  out = [a]
  for i, h in enumerate(teacher_layers[1:], start=2):
    gate = gates[str(i)]
    g = jax.nn.sigmoid(a @ gate["kernel"] + gate["bias"])
    a = _layer_norm(g * jnp.asarray(h, jnp.float32) + (1.0 - g) * a, gate)
    out.append(a)
  return out


def lad_loss(x) -> jax.Array:
  """The `lad` term: mean over student layers of the masked MSE to the teacher aggregates.

  x: methods.base.Inputs (hidden states of both, this term's aux, the batch)."""
  s_layers = x.student.hidden_states[1:]
  t_layers = x.teacher.hidden_states[1:]
  k = layer_stride(len(s_layers), len(t_layers))
  aggs = aggregate(t_layers[:k * len(s_layers)], x.aux["gates"])
  proj = x.aux.get("proj", {})
  per_layer = [
      losses.tinybert_hidden_loss(s, aggs[k * (j + 1) - 1], x.batch["attention_mask"],
                                  projection_kernel=proj.get("kernel"),
                                  projection_bias=proj.get("bias"),
                                  example_weight=x.batch["example_weight"])
      for j, s in enumerate(s_layers)]
  return jnp.mean(jnp.stack(per_layer))


@register_term("lad")
@dataclasses.dataclass(frozen=True)
class LAD(Term):
  learnable_norm: bool = False
  doc = "LAD: MSE to gated aggregates of the teacher's layers"
  student = Collect(hidden_states=True)
  teacher = Collect(hidden_states=True)

  @classmethod
  def from_config(cls, config):
    return cls(bool(config.lad.learnable_norm))

  def init_params(self, key, student_cfg, teacher_cfg) -> dict:
    return init_gates(key, student_cfg, teacher_cfg, learnable_norm=self.learnable_norm)

  def __call__(self, x: Inputs) -> jax.Array:
    return lad_loss(x)


register("lad")(Distill)  # the recipe's label: hard_ce + kd + lad through the composite method
