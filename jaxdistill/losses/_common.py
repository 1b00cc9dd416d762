"""Shared helpers for the loss zoo: dtype promotion, masks, reductions, safe maths.

Conventions used by every loss in :mod:`jaxdistill.losses`:

* Inputs are promoted to at least float32 before any arithmetic (bf16/fp16 in,
  float32 out; float64 stays float64 so gradients can be checked under x64).
* ``reduction`` is one of ``"mean"``, ``"sum"``, ``"none"``.  Every loss first
  computes an *unreduced* array of per-unit values, where the unit is the example
  (``[B]``) for example-level losses and the token (``[B, S]``) for token-level
  losses, together with a weight of the same shape (validity mask times
  ``example_weight``).  Then

  - ``"none"`` returns ``values * weight`` (so padded / dummy units are exactly 0
    and ``loss(..., "none").sum() == loss(..., "sum")``),
  - ``"sum"``  returns ``sum(values * weight)``,
  - ``"mean"`` returns ``sum(values * weight) / sum(weight)``, with the
    denominator replaced by 1 when it is 0 (a fully padded batch gives 0, not NaN).
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array

REDUCTIONS = ("mean", "sum", "none")

# A large *finite* negative used instead of -inf for masked logits: softmax over a row
# that is masked everywhere becomes uniform (finite) instead of NaN, and subtracting
# two of them cannot overflow.
NEG_LARGE = float(jnp.finfo(jnp.float32).min) / 2
# Smallest positive normal float32; log(TINY) ~= -87.3 is used to take logs of probabilities.
TINY = float(jnp.finfo(jnp.float32).tiny)


def check_reduction(reduction: str) -> None:
  """Raise a one-line ValueError for an unknown reduction."""
  if not isinstance(reduction, str) or reduction not in REDUCTIONS:
    raise ValueError(
        f"reduction must be one of 'mean', 'sum', 'none'; got {reduction!r}")


def check_temperature(temperature) -> None:
  """Reject non-positive Python-number temperatures (traced values are not checked)."""
  if isinstance(temperature, (int, float)) and not temperature > 0:
    raise ValueError(f"temperature must be > 0; got {temperature!r}")


def to_float(x) -> Array:
  """Promote to a floating dtype of at least float32 (bf16 -> f32, f64 stays f64)."""
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.floating):
    return x.astype(jnp.promote_types(x.dtype, jnp.float32))
  return x.astype(jnp.float32)


def check_same_shape(a: Array, b: Array, what: str) -> None:
  if a.shape != b.shape:
    raise ValueError(f"{what}: student shape {tuple(a.shape)} != teacher shape {tuple(b.shape)}")


def check_ndim(x: Array, ndim: int, name: str, layout: str) -> None:
  if x.ndim != ndim:
    raise ValueError(f"{name} must be {layout} ({ndim}-D); got shape {tuple(x.shape)}")


def token_mask(attention_mask: Optional[Array], batch: int, seq: int) -> Array:
  """[B, S] float mask (1 = real token); all ones when ``attention_mask`` is None."""
  if attention_mask is None:
    return jnp.ones((batch, seq), jnp.float32)
  attention_mask = jnp.asarray(attention_mask)
  if attention_mask.shape != (batch, seq):
    raise ValueError(
        f"attention_mask must have shape [B, S] = {(batch, seq)}; got {tuple(attention_mask.shape)}")
  return (attention_mask != 0).astype(jnp.float32)


def reduce_loss(values: Array, valid: Optional[Array] = None,
                example_weight: Optional[Array] = None, reduction: str = "mean") -> Array:
  """Apply the library-wide reduction convention (see module docstring).

  values: [B] or [B, S] per-unit losses; valid: same shape (1 = counted) or None;
  example_weight: [B] or None (0 = padded dummy example).
  """
  check_reduction(reduction)
  weight = jnp.ones(values.shape, values.dtype) if valid is None else (
      jnp.broadcast_to(jnp.asarray(valid), values.shape).astype(values.dtype))
  if example_weight is not None:
    example_weight = jnp.asarray(example_weight)
    if example_weight.shape != values.shape[:1]:
      raise ValueError(
          f"example_weight must have shape [B] = {tuple(values.shape[:1])}; "
          f"got {tuple(example_weight.shape)}")
    ew = example_weight.astype(values.dtype).reshape(values.shape[:1] + (1,) * (values.ndim - 1))
    weight = weight * ew
  weighted = jnp.where(weight != 0, values * weight, jnp.zeros_like(values))
  if reduction == "none":
    return weighted
  total = jnp.sum(weighted)
  if reduction == "sum":
    return total
  denom = jnp.sum(weight)
  return total / jnp.where(denom != 0, denom, jnp.ones_like(denom))


def safe_norm(x: Array, eps: float, axis: int = -1, keepdims: bool = True) -> Array:
  """max(||x||_2, eps) with a finite gradient at x = 0."""
  sq = jnp.sum(x * x, axis=axis, keepdims=keepdims)
  return jnp.sqrt(jnp.maximum(sq, eps * eps))


def safe_div(num: Array, den: Array) -> Array:
  """num / den with den == 0 replaced by 1 (used where num is then 0 as well)."""
  return num / jnp.where(den != 0, den, jnp.ones_like(den))


def masked_log_softmax(logits: Array, key_mask: Array) -> Array:
  """log_softmax over the last (key) axis with padded keys excluded.

  logits: [B, ..., S_k]; key_mask: [B, S_k] (1 = real).  -inf / huge negative inputs are
  clamped to ``NEG_LARGE`` and padded keys are set to it, so every row (even one whose
  keys are all padded) is finite.
  """
  logits = jnp.maximum(logits, NEG_LARGE)
  km = key_mask.reshape(key_mask.shape[:1] + (1,) * (logits.ndim - 2) + key_mask.shape[1:])
  logits = jnp.where(km != 0, logits, NEG_LARGE)
  return jax.nn.log_softmax(logits, axis=-1)


def row_kl(teacher_logp: Array, student_logp: Array, key_mask: Array) -> Array:
  """sum_k p_t,k (log p_t,k - log q_s,k) over real keys: [B, ..., S_q, S_k] -> [B, ..., S_q]."""
  km = key_mask.reshape(key_mask.shape[:1] + (1,) * (teacher_logp.ndim - 2) + key_mask.shape[1:])
  p = jnp.exp(teacher_logp)
  term = p * (teacher_logp - student_logp)
  return jnp.sum(jnp.where(km != 0, term, jnp.zeros_like(term)), axis=-1)


def sum_over_layer_pairs(loss_fn: Callable[..., Array], student_states: Sequence[Array],
                         teacher_states: Sequence[Array],
                         layer_pairs: Sequence[tuple[int, int]], *, what: str = "layer pair",
                         index_name: str = "index", **kwargs) -> Array:
  """sum_{(i, j) in layer_pairs} loss_fn(student_states[i], teacher_states[j], **kwargs).

  ``*_states`` are hidden-state tuples (index 0 = embedding output, i = output of layer i),
  or per-layer attention tuples indexed however the caller's layer map indexes them.
  ``what`` and ``index_name`` word the range errors for the calling loss.
  """
  if len(layer_pairs) == 0:
    raise ValueError(f"{what}: layer_pairs is empty; nothing to distil")
  total = None
  for s, t in layer_pairs:
    if not 0 <= s < len(student_states):
      raise ValueError(f"{what} ({s}, {t}): student {index_name} {s} is out of range "
                       f"0..{len(student_states) - 1}")
    if not 0 <= t < len(teacher_states):
      raise ValueError(f"{what} ({s}, {t}): teacher {index_name} {t} is out of range "
                       f"0..{len(teacher_states) - 1}")
    term = loss_fn(student_states[s], teacher_states[t], **kwargs)
    total = term if total is None else total + term
  return total
