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
aggregate is unaffected by padding. `lad.average_over` picks the MSE's positions: "tokens"
(default) the real tokens only (weighted by example_weight, tinybert_hidden_loss's
reduction); "padded" every position of the batch as the thesis does, padding included (our
batches are padded to a multiple of train.bucket_multiple; set it to data.max_length to pad
every batch to the full length as the thesis' loader does).

Gates: `lad.gate="learned"` (default) is the recursion above; `lad.gate="one"` fixes every
g_i = 1, so a_i = LayerNorm(h_i) and the term is a plain per-layer MSE to the normalised
teacher layer at depth k*j: the control that tells what the learned gates add.

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
from jaxdistill.core.errors import ConfigError
from jaxdistill.core.outputs import Collect
from jaxdistill.methods.base import Inputs, Term, register, register_term
from jaxdistill.methods.distill import Distill
from jaxdistill.models import BertConfig

CONFIG = dict(learnable_norm=False, average_over="tokens", gate="learned")
AVERAGE_OVER = ("tokens", "padded")
GATES = ("learned", "one")
LN_EPS = 1e-5  # torch.nn.LayerNorm's default, which the thesis' gates use


def layer_stride(student_layers: int, teacher_layers: int) -> int:
  """k: student layer j is matched to the aggregate of teacher layers 1..k*j."""
  if not 1 <= student_layers <= teacher_layers:
    raise ValueError(f"LAD: a {student_layers}-layer student cannot be matched to a "
                     f"{teacher_layers}-layer teacher; the student needs 1..{teacher_layers} layers")
  return teacher_layers // student_layers


def init_gates(key, s: BertConfig, t: BertConfig, *, learnable_norm: bool = False,
               gate: str = "learned") -> dict:
  """Gate params {"gates": {"2": {kernel [H,H], bias [H] (, scale, offset)}, ...}} for
  i = 2..k*n, plus {"proj": {kernel, bias}} when the widths differ. gate="one" has no
  kernel or bias (g = 1); with no parameter left at all the result is {}."""
  depth = layer_stride(s.num_layers, t.num_layers) * s.num_layers
  h = t.hidden_size
  limit = (6.0 / (h + h)) ** 0.5  # Xavier uniform
  gates = {}
  for i in range(2, depth + 1):
    g = {}
    if gate == "learned":
      g["kernel"] = jax.random.uniform(jax.random.fold_in(key, i), (h, h), jnp.float32, -limit, limit)
      g["bias"] = jnp.zeros((h,), jnp.float32)
    if learnable_norm:
      g["scale"], g["offset"] = jnp.ones((h,), jnp.float32), jnp.zeros((h,), jnp.float32)
    if g:
      gates[str(i)] = g
  aux = {"gates": gates} if gates else {}  # no leaves, no aux entry (the composite drops {})
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


def aggregate(teacher_layers: Sequence[jax.Array], gates: dict, *, gate: str = "learned"
              ) -> list[jax.Array]:
  """[a_1, ..., a_D] from the teacher's layer outputs h_1..h_D (embeddings excluded);
  gate="one": g_i = 1, so a_i = LayerNorm(h_i) for i >= 2."""
  a = jnp.asarray(teacher_layers[0], jnp.float32)
  out = [a]
  for i, h in enumerate(teacher_layers[1:], start=2):
    params = gates.get(str(i), {})
    h = jnp.asarray(h, jnp.float32)
    if gate == "one":
      mixed = h
    else:
      g = jax.nn.sigmoid(a @ params["kernel"] + params["bias"])
      mixed = g * h + (1.0 - g) * a
    a = _layer_norm(mixed, params)
    out.append(a)
  return out


def lad_loss(x, *, average_over: str = "tokens", gate: str = "learned") -> jax.Array:
  """The `lad` term: mean over student layers of the MSE to the teacher aggregates, over
  real tokens (average_over="tokens") or every padded position ("padded").

  x: methods.base.Inputs (hidden states of both, this term's aux, the batch)."""
  s_layers = x.student.hidden_states[1:]
  t_layers = x.teacher.hidden_states[1:]
  k = layer_stride(len(s_layers), len(t_layers))
  aggs = aggregate(t_layers[:k * len(s_layers)], x.aux.get("gates", {}), gate=gate)
  proj = x.aux.get("proj", {})
  mask = x.batch["attention_mask"]
  if average_over == "padded":  # the thesis: every position of the padded batch counts
    mask = jnp.ones_like(mask)
  per_layer = [
      losses.tinybert_hidden_loss(s, aggs[k * (j + 1) - 1], mask,
                                  projection_kernel=proj.get("kernel"),
                                  projection_bias=proj.get("bias"),
                                  example_weight=x.batch["example_weight"])
      for j, s in enumerate(s_layers)]
  return jnp.mean(jnp.stack(per_layer))


@register_term("lad")
@dataclasses.dataclass(frozen=True)
class LAD(Term):
  learnable_norm: bool = False
  average_over: str = "tokens"
  gate: str = "learned"
  doc = "LAD: MSE to gated aggregates of the teacher's layers"
  student = Collect(hidden_states=True)
  teacher = Collect(hidden_states=True)

  @classmethod
  def from_config(cls, config):
    c = config.lad
    for key, value, allowed in (("average_over", c.average_over, AVERAGE_OVER),
                                ("gate", c.gate, GATES)):
      if value not in allowed:
        raise ConfigError(f"lad.{key}={value!r}; use one of {', '.join(allowed)} "
                          f"(e.g. --config.lad.{key}={allowed[0]})")
    return cls(bool(c.learnable_norm), str(c.average_over), str(c.gate))

  def init_params(self, key, student_cfg, teacher_cfg) -> dict:
    return init_gates(key, student_cfg, teacher_cfg, learnable_norm=self.learnable_norm,
                      gate=self.gate)

  def __call__(self, x: Inputs) -> jax.Array:
    return lad_loss(x, average_over=self.average_over, gate=self.gate)


register("lad")(Distill)  # the recipe's label: hard_ce + kd + lad through the composite method
