"""MiniLM v1 and MiniLMv2: self-attention distillation as loss terms.

MiniLM v1 (Wang et al., NeurIPS 2020) matches only the *last* Transformer layer's
self-attention, so the student's depth is free (no layer map):

    minilm_attention = 1/(A|x|) sum_a sum_t KL(A^T_{a,t} || A^S_{a,t})     attention distributions
    minilm_value     = 1/(A|x|) sum_a sum_t KL(VR^T_{a,t} || VR^S_{a,t})   VR = softmax(V V^T / sqrt(d_k))

Both are per attention head, so teacher and student need the same number of heads (head
sizes, hence widths, may differ). Different head counts are a one-line error that points at
MiniLMv2.

MiniLMv2 (Wang et al., Findings of ACL 2021) concatenates each model's heads back to its
hidden width H and re-splits Q, K and V into `minilm.relation_heads` relation heads of width
H/R, so the relation matrices are S x S per relation head whatever the head counts and widths:

    minilm_v2 = L_QQ + L_KK + L_VV,  each 1/(R|x|) sum_r sum_t KL(R^T_{r,t} || R^S_{r,t}),
                R_r = softmax(X_r X_r^T / sqrt(H/R))

Layers. The student's last layer is always the one trained (both papers). The teacher layer is
`minilm.teacher_layer`: a 1-based layer number, negative from the end (-1 = the last, as v1
does; MiniLMv2 recommends an upper-middle layer of large teachers, e.g. 21 of 24; for a
base-size or smaller teacher it uses the last).

The losses are the pure functions in jaxdistill/losses/relations.py (docs/losses.md); these
terms pick the layers, check the shapes against the config, and pass the padding mask and the
example weights. Attention is read as pre-softmax scores (`from_logits=True`): the log-softmax
of the scores is exact where log(probabilities) would underflow.
"""

from __future__ import annotations

import dataclasses
import math

import jax

from jaxdistill import losses
from jaxdistill.core.outputs import Collect
from jaxdistill.methods.base import Inputs, Term, register, register_term
from jaxdistill.methods.distill import Distill

CONFIG = {
    # MiniLMv2 relation heads R: each model's Q, K, V (concatenated over heads, width H) are
    # split into R heads of width H/R. R must divide both widths. 12 = the MiniLM teacher's
    # own head count, so on the teacher side the relation heads are its attention heads.
    "relation_heads": 12,
    # The teacher layer whose self-attention is the target: 1..L, or -L..-1 (-1 = last).
    "teacher_layer": -1,
}


def teacher_layer_index(teacher_layer: int, num_layers: int) -> int:
  """0-based index into the teacher's per-layer tuples for `minilm.teacher_layer`."""
  if not (1 <= teacher_layer <= num_layers or -num_layers <= teacher_layer <= -1):
    raise ValueError(f"minilm.teacher_layer={teacher_layer} is out of range for a {num_layers}-layer "
                     f"teacher; use 1..{num_layers} or -{num_layers}..-1 (-1 = the last layer)")
  return teacher_layer - 1 if teacher_layer > 0 else num_layers + teacher_layer


def _check_equal_heads(term: str, student: jax.Array, teacher: jax.Array) -> None:
  # Shapes are static under jit, so this fails at trace time, before any step runs.
  s, t = student.shape[1], teacher.shape[1]
  if s != t:
    raise ValueError(f"losses.{term}: MiniLM v1 needs equal head counts (teacher {t} vs student "
                     f"{s}); use losses.minilm_v2 (MiniLMv2 relation heads, minilm.relation_heads) "
                     "instead")


def _width(x: jax.Array) -> int:
  return x.shape[1] * x.shape[3]  # [B, N, S, D]: the heads concatenated


@dataclasses.dataclass(frozen=True)
class _MiniLMTerm(Term):
  """None of the terms reads the teacher's logits, so a teacher whose classifier never
  trained (the assistant of configs/minilm_ta.py) may teach them."""
  teacher_layer: int = -1
  relation_heads: int = 12
  reads_teacher_logits = False

  @classmethod
  def from_config(cls, config):
    return cls(int(config.minilm.teacher_layer), int(config.minilm.relation_heads))

  def teacher_at(self, per_layer: tuple) -> jax.Array:
    return per_layer[teacher_layer_index(self.teacher_layer, len(per_layer))]


@register_term("minilm_attention")
@dataclasses.dataclass(frozen=True)
class AttentionTransfer(_MiniLMTerm):
  doc = "MiniLM v1: KL of the last layer's attention distributions (equal head counts)"
  student = Collect(attention_scores=True)
  teacher = Collect(attention_scores=True)

  def __call__(self, x: Inputs) -> jax.Array:
    s = x.student.attention_scores[-1]
    t = self.teacher_at(x.teacher.attention_scores)
    _check_equal_heads("minilm_attention", s, t)
    return losses.minilm_attention_loss(s, t, x.batch["attention_mask"], from_logits=True,
                                        example_weight=x.batch["example_weight"])


@register_term("minilm_value")
@dataclasses.dataclass(frozen=True)
class ValueRelation(_MiniLMTerm):
  doc = "MiniLM v1: KL of the last layer's value relations softmax(VV^T/sqrt(d))"
  student = Collect(qkv=True)
  teacher = Collect(qkv=True)

  def __call__(self, x: Inputs) -> jax.Array:
    s = x.student.values[-1]
    t = self.teacher_at(x.teacher.values)
    _check_equal_heads("minilm_value", s, t)
    return losses.minilm_value_relation_loss(s, t, x.batch["attention_mask"],
                                             example_weight=x.batch["example_weight"])


@register_term("minilm_v2")
@dataclasses.dataclass(frozen=True)
class RelationV2(_MiniLMTerm):
  doc = "MiniLMv2: Q-Q, K-K, V-V relation KL over minilm.relation_heads relation heads"
  student = Collect(qkv=True)
  teacher = Collect(qkv=True)

  def __call__(self, x: Inputs) -> jax.Array:
    r = self.relation_heads
    s_qkv = (x.student.queries[-1], x.student.keys[-1], x.student.values[-1])
    t_qkv = tuple(self.teacher_at(part) for part in (x.teacher.queries, x.teacher.keys, x.teacher.values))
    hs, ht = _width(s_qkv[0]), _width(t_qkv[0])
    if r < 1 or hs % r or ht % r:
      raise ValueError(f"minilm.relation_heads={r} must divide both widths (teacher {ht}, student "
                       f"{hs}); use a common divisor, e.g. {math.gcd(hs, ht)}")
    return losses.minilm_v2_loss(s_qkv, t_qkv, x.batch["attention_mask"], num_relation_heads=r,
                                 example_weight=x.batch["example_weight"])


MINILM_TERMS = ("minilm_attention", "minilm_value", "minilm_v2")
register("minilm", "minilm_v2", "minilm_ta")(Distill)  # recipes of the composite method
