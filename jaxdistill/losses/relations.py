"""Attention-distribution and self-attention-relation losses (MiniLM v1/v2, MobileBERT AT).

Every loss here is a KL(teacher || student) between row distributions over keys,
computed per (head, query token), averaged over heads, then over real query tokens of
the batch.  Padding is excluded from both axes: padded *query* rows are not counted,
and padded *key* columns are removed from each softmax (set to a large finite negative
before the softmax, so they get zero probability and rows stay finite even when the
whole sequence is padding).  Shapes: attention [B, N, S, S] (query axis, then key axis);
queries/keys/values [B, N, S, D] (head-major); attention_mask [B, S], 1 = real token.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from ._common import (TINY, check_ndim, check_reduction, masked_log_softmax, reduce_loss,
                      row_kl, to_float, token_mask)

Array = jax.Array


def _check_pair(s: Array, t: Array, what: str, layout: str) -> None:
  check_ndim(s, 4, f"{what}: student", layout)
  check_ndim(t, 4, f"{what}: teacher", layout)
  if s.shape[0] != t.shape[0] or s.shape[2] != t.shape[2]:
    raise ValueError(f"{what}: student (B, S) = {(s.shape[0], s.shape[2])} != teacher "
                     f"{(t.shape[0], t.shape[2])}")


def _relation_kl(student_logits: Array, teacher_logits: Array, m: Array,
                 example_weight, reduction) -> Array:
  """[B, R, S, S] relation logits -> reduced KL(teacher || student) (see module docstring)."""
  kl = row_kl(masked_log_softmax(teacher_logits, m), masked_log_softmax(student_logits, m), m)
  return reduce_loss(jnp.mean(kl, axis=1), m, example_weight, reduction)  # mean over heads


def _attention_kl(student_attention, teacher_attention, attention_mask, from_logits,
                  head_error: str, what: str, example_weight, reduction) -> Array:
  check_reduction(reduction)
  s = to_float(student_attention)
  t = to_float(teacher_attention)
  _check_pair(s, t, what, "[B, N, S, S]")
  if s.shape[1] != t.shape[1]:
    raise ValueError(head_error.format(t=t.shape[1], s=s.shape[1]))
  if s.shape != t.shape or s.shape[2] != s.shape[3]:
    raise ValueError(f"{what}: attention must be [B, N, S, S] with equal shapes; got student "
                     f"{tuple(s.shape)}, teacher {tuple(t.shape)}")
  if not from_logits:  # probabilities -> log-probabilities (renormalised over real keys below)
    s = jnp.log(jnp.maximum(s, TINY))
    t = jnp.log(jnp.maximum(t, TINY))
  m = token_mask(attention_mask, s.shape[0], s.shape[2])
  return _relation_kl(s, t, m, example_weight, reduction)


def attention_kl_loss(student_attention: Array,  # [B, N, S, S] probs (or scores if from_logits)
                      teacher_attention: Array,  # [B, N, S, S]
                      attention_mask: Optional[Array] = None,  # [B, S]
                      *,
                      from_logits: bool = False,
                      example_weight: Optional[Array] = None,
                      reduction: str = "mean") -> Array:
  """mean_heads KL(A_t[h, q, :] || A_s[h, q, :]) per real query token -- attention transfer (MiniLM / MobileBERT).

  With ``from_logits=False`` the inputs are attention probabilities; they are restricted
  to real keys and renormalised (a no-op for correctly masked attention).  With
  ``from_logits=True`` they are pre-softmax scores (any additive mask, -inf or finfo.min
  included, is fine).  Equal head counts are required.
  """
  return _attention_kl(student_attention, teacher_attention, attention_mask, from_logits,
                       "attention_kl_loss needs equal head counts (teacher {t} vs student {s}); "
                       "use minilm_v2_relation_loss instead", "attention_kl_loss",
                       example_weight, reduction)


def mobilebert_attention_loss(student_attention: Array,  # [B, N, S, S]
                              teacher_attention: Array,  # [B, N, S, S]
                              attention_mask: Optional[Array] = None,  # [B, S]
                              *,
                              from_logits: bool = False,
                              example_weight: Optional[Array] = None,
                              reduction: str = "mean") -> Array:
  """1/(S*A) sum_t sum_a KL(A_t || A_s) -- MobileBERT attention transfer, Sun et al. 2020.

  Identical to attention_kl_loss (KL per head, averaged over heads and real tokens).  The
  TF Model Garden code uses the cross-entropy form (same gradient, offset by the teacher
  entropy).
  """
  return _attention_kl(student_attention, teacher_attention, attention_mask, from_logits,
                       "MobileBERT attention transfer needs equal head counts (teacher {t} vs "
                       "student {s})", "mobilebert_attention_loss", example_weight, reduction)


def minilm_attention_loss(student_attention: Array,  # [B, N, S, S], last student layer
                          teacher_attention: Array,  # [B, N, S, S], last teacher layer
                          attention_mask: Optional[Array] = None,  # [B, S]
                          *,
                          from_logits: bool = False,
                          example_weight: Optional[Array] = None,
                          reduction: str = "mean") -> Array:
  """1/(A|x|) sum_a sum_t KL(A^T_{a,t} || A^S_{a,t}) -- MiniLM v1 attention transfer, Wang et al. 2020.

  Raises ValueError unless teacher and student have the same number of heads.
  """
  return _attention_kl(student_attention, teacher_attention, attention_mask, from_logits,
                       "MiniLM v1 needs equal head counts (teacher {t} vs student {s}); use "
                       "minilm_v2 relation heads instead", "minilm_attention_loss",
                       example_weight, reduction)


def _self_relation_logits(x: Array) -> Array:
  """[B, R, S, d] -> [B, R, S, S] = x x^T / sqrt(d)."""
  return jnp.einsum("brqd,brkd->brqk", x, x) / math.sqrt(x.shape[-1])


def minilm_value_relation_loss(student_values: Array,  # [B, N, S, D_s], last student layer
                               teacher_values: Array,  # [B, N, S, D_t], last teacher layer
                               attention_mask: Optional[Array] = None,  # [B, S]
                               *,
                               example_weight: Optional[Array] = None,
                               reduction: str = "mean") -> Array:
  """1/(A|x|) sum_a sum_t KL(VR^T_{a,t} || VR^S_{a,t}), VR = softmax(V V^T / sqrt(d_head)) -- MiniLM v1 value relation, Wang et al. 2020.

  Head dimensions may differ (the relation is S x S); head counts must be equal.
  """
  check_reduction(reduction)
  s = to_float(student_values)
  t = to_float(teacher_values)
  _check_pair(s, t, "minilm_value_relation_loss", "[B, N, S, D]")
  if s.shape[1] != t.shape[1]:
    raise ValueError(f"MiniLM v1 needs equal head counts (teacher {t.shape[1]} vs student "
                     f"{s.shape[1]}); use minilm_v2 relation heads instead")
  m = token_mask(attention_mask, s.shape[0], s.shape[2])
  return _relation_kl(_self_relation_logits(s), _self_relation_logits(t), m,
                      example_weight, reduction)


def _relation_heads(x: Array, num_relation_heads: int, who: str) -> Array:
  """[B, N, S, D] (or already-merged [B, S, H]) -> [B, R, S, H/R]."""
  if x.ndim == 4:
    b, n, s, d = x.shape
    x = jnp.transpose(x, (0, 2, 1, 3)).reshape(b, s, n * d)
  elif x.ndim != 3:
    raise ValueError(f"minilm_v2_relation_loss: {who} must be [B, N, S, D] or [B, S, H]; got "
                     f"shape {tuple(x.shape)}")
  b, s, h = x.shape
  if h % num_relation_heads:
    raise ValueError(f"MiniLMv2: {who} width {h} is not divisible by "
                     f"num_relation_heads={num_relation_heads}")
  x = x.reshape(b, s, num_relation_heads, h // num_relation_heads)
  return jnp.transpose(x, (0, 2, 1, 3))


def minilm_v2_relation_loss(student_x: Array,  # [B, N_s, S, D_s] queries, keys or values
                            teacher_x: Array,  # [B, N_t, S, D_t] (same kind)
                            attention_mask: Optional[Array] = None,  # [B, S]
                            *,
                            num_relation_heads: int,
                            example_weight: Optional[Array] = None,
                            reduction: str = "mean") -> Array:
  """1/(R|x|) sum_r sum_t KL(R^T_{r,t} || R^S_{r,t}), R = softmax(X_r X_r^T / sqrt(H/R)) -- MiniLMv2 self-attention relation, Wang et al. 2021.

  Heads are concatenated back to [B, S, H] and re-split into ``num_relation_heads`` heads
  of width H/R (H_s and H_t must each be divisible by R), so teacher and student head
  counts and widths may differ.  Inputs may also be given already merged as [B, S, H].
  """
  check_reduction(reduction)
  if not isinstance(num_relation_heads, int) or num_relation_heads < 1:
    raise ValueError(f"num_relation_heads must be a positive int; got {num_relation_heads!r}")
  s = _relation_heads(to_float(student_x), num_relation_heads, "student")
  t = _relation_heads(to_float(teacher_x), num_relation_heads, "teacher")
  if s.shape[0] != t.shape[0] or s.shape[2] != t.shape[2]:
    raise ValueError(f"minilm_v2_relation_loss: student (B, S) = {(s.shape[0], s.shape[2])} != "
                     f"teacher {(t.shape[0], t.shape[2])}")
  m = token_mask(attention_mask, s.shape[0], s.shape[2])
  return _relation_kl(_self_relation_logits(s), _self_relation_logits(t), m,
                      example_weight, reduction)


def minilm_v2_loss(student_qkv: Sequence[Array],  # (Q, K, V), each [B, N_s, S, D_s]
                   teacher_qkv: Sequence[Array],  # (Q, K, V), each [B, N_t, S, D_t]
                   attention_mask: Optional[Array] = None,  # [B, S]
                   *,
                   num_relation_heads: int,
                   example_weight: Optional[Array] = None,
                   reduction: str = "mean") -> Array:
  """L_QQ + L_KK + L_VV (each minilm_v2_relation_loss) -- MiniLMv2 total loss, Wang et al. 2021."""
  if len(student_qkv) != 3 or len(teacher_qkv) != 3:
    raise ValueError("minilm_v2_loss expects (queries, keys, values) triples")
  total = None
  for s, t in zip(student_qkv, teacher_qkv):
    term = minilm_v2_relation_loss(s, t, attention_mask, num_relation_heads=num_relation_heads,
                                   example_weight=example_weight, reduction=reduction)
    total = term if total is None else total + term
  return total
