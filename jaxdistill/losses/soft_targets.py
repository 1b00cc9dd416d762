"""Output-layer losses: soft targets (KD), hard labels, logit MSE, regression MSE.

All functions accept logits of shape [B, C] (example-level) or [B, S, C] (token-level,
e.g. MLM logits); ``mask`` ([B] or [B, S], 1 = counted) selects which rows count, and
``example_weight`` [B] weights examples (0 = padded dummy example).  See
:mod:`jaxdistill.losses._common` for the reduction convention.  No stop_gradient is
applied to teacher inputs: wrap them in ``jax.lax.stop_gradient`` if they are traced.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from ._common import (NEG_LARGE, check_reduction, check_same_shape, check_temperature,
                      reduce_loss, to_float)

Array = jax.Array


def _check_mask(mask: Optional[Array], shape: tuple, name: str = "mask") -> Optional[Array]:
  if mask is None:
    return None
  mask = jnp.asarray(mask)
  if mask.shape != shape:
    raise ValueError(f"{name} must have shape {shape} (the logits shape without the class "
                     f"axis); got {tuple(mask.shape)}")
  return mask != 0


def _tempered_log_probs(student_logits, teacher_logits, temperature):
  s, t = jnp.asarray(student_logits), jnp.asarray(teacher_logits)
  check_same_shape(s, t, "logits")
  if s.ndim not in (2, 3):
    raise ValueError(f"logits must be [B, C] or [B, S, C]; got shape {tuple(s.shape)}")
  # clamp after the division: -inf or finfo.min logits stay finite for any T
  log_q = jax.nn.log_softmax(jnp.maximum(to_float(s) / temperature, NEG_LARGE), axis=-1)
  log_p = jax.nn.log_softmax(jnp.maximum(to_float(t) / temperature, NEG_LARGE), axis=-1)
  return log_q, log_p


def kd_kl_loss(student_logits: Array,  # [B, C] or [B, S, C]
               teacher_logits: Array,  # same shape
               temperature: float = 1.0, *,
               scale_by_t2: bool = True,
               mask: Optional[Array] = None,  # [B] or [B, S]
               example_weight: Optional[Array] = None,  # [B]
               reduction: str = "mean") -> Array:
  """T^2 * KL(softmax(t/T) || softmax(s/T)) per row -- Hinton et al. 2015 (knowledge distillation).

  ``scale_by_t2`` multiplies by T^2 so gradient magnitudes stay O(1) as T grows (the
  paper's recommendation; DistilBERT's L_ce does the same).  Rows: examples for [B, C]
  logits, tokens for [B, S, C] logits.
  """
  check_reduction(reduction)
  check_temperature(temperature)
  log_q, log_p = _tempered_log_probs(student_logits, teacher_logits, temperature)
  per = jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)
  if scale_by_t2:
    per = per * (temperature ** 2)
  return reduce_loss(per, _check_mask(mask, per.shape), example_weight, reduction)


def soft_cross_entropy_loss(student_logits: Array,  # [B, C] or [B, S, C]
                            teacher_logits: Array,  # same shape
                            temperature: float = 1.0, *,
                            scale_by_t2: bool = True,
                            mask: Optional[Array] = None,  # [B] or [B, S]
                            example_weight: Optional[Array] = None,  # [B]
                            reduction: str = "mean") -> Array:
  """T^2 * (-sum_c softmax(t/T)_c log softmax(s/T)_c) -- soft cross-entropy, Hinton et al. 2015.

  Equals kd_kl_loss plus the (student-independent) teacher entropy, so the gradients
  wrt the student are identical; it is not zero when student == teacher.
  """
  check_reduction(reduction)
  check_temperature(temperature)
  log_q, log_p = _tempered_log_probs(student_logits, teacher_logits, temperature)
  per = -jnp.sum(jnp.exp(log_p) * log_q, axis=-1)
  if scale_by_t2:
    per = per * (temperature ** 2)
  return reduce_loss(per, _check_mask(mask, per.shape), example_weight, reduction)


def tinybert_prediction_loss(student_logits: Array,  # [B, C] or [B, S, C]
                             teacher_logits: Array,  # same shape
                             temperature: float = 1.0, *,
                             mask: Optional[Array] = None,
                             example_weight: Optional[Array] = None,
                             reduction: str = "mean") -> Array:
  """-sum_c softmax(t/T)_c log softmax(s/T)_c, no T^2 factor -- TinyBERT prediction layer (Jiao et al. 2020).

  Same as ``soft_cross_entropy_loss(..., scale_by_t2=False)`` (TinyBERT's code uses T=1).
  """
  return soft_cross_entropy_loss(student_logits, teacher_logits, temperature,
                                 scale_by_t2=False, mask=mask,
                                 example_weight=example_weight, reduction=reduction)


def cross_entropy_loss(logits: Array,  # [B, C] or [B, S, C]
                       labels: Array,  # [B] or [B, S] int
                       *,
                       mask: Optional[Array] = None,  # [B] or [B, S]
                       ignore_index: int = -100,
                       example_weight: Optional[Array] = None,  # [B]
                       reduction: str = "mean") -> Array:
  """-log softmax(z)_y per row -- hard-label cross-entropy (the student's task loss).

  Rows whose label equals ``ignore_index`` (or whose ``mask`` is 0) are not counted;
  "mean" averages over counted rows.
  """
  check_reduction(reduction)
  z = jnp.maximum(to_float(logits), NEG_LARGE)
  labels = jnp.asarray(labels)
  if z.ndim not in (2, 3) or labels.shape != z.shape[:-1]:
    raise ValueError(f"cross_entropy_loss: logits must be [B, C] or [B, S, C] and labels the "
                     f"logits shape without C; got {tuple(z.shape)} and {tuple(labels.shape)}")
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise ValueError(f"labels must be integers; got dtype {labels.dtype}")
  valid = labels != ignore_index
  m = _check_mask(mask, labels.shape)
  if m is not None:
    valid = valid & m
  safe_labels = jnp.where(valid, labels, 0)
  log_q = jax.nn.log_softmax(z, axis=-1)
  per = -jnp.take_along_axis(log_q, safe_labels[..., None], axis=-1)[..., 0]
  return reduce_loss(per, valid, example_weight, reduction)


def logit_mse_loss(student_logits: Array,  # [B, C] or [B, S, C]
                   teacher_logits: Array,  # same shape
                   *,
                   mask: Optional[Array] = None,  # [B] or [B, S]
                   example_weight: Optional[Array] = None,  # [B]
                   reduction: str = "mean") -> Array:
  """mean_c (z_s,c - z_t,c)^2 per row -- logit matching, Bucilua et al. 2006; Tang et al. 2019.

  Averaged over the class axis (= torch MSELoss(reduction="mean") over [B, C]); Tang et
  al.'s ||z_t - z_s||_2^2 is this value times C.
  """
  check_reduction(reduction)
  s = to_float(student_logits)
  t = to_float(teacher_logits)
  check_same_shape(s, t, "logit_mse_loss")
  if s.ndim not in (2, 3):
    raise ValueError(f"logits must be [B, C] or [B, S, C]; got shape {tuple(s.shape)}")
  per = jnp.mean(jnp.square(s - t), axis=-1)
  return reduce_loss(per, _check_mask(mask, per.shape), example_weight, reduction)


def regression_mse_loss(predictions: Array,  # [B] or [B, K]
                        targets: Array,  # [B] or [B, K]
                        *,
                        example_weight: Optional[Array] = None,  # [B]
                        reduction: str = "mean") -> Array:
  """mean_k (y_hat_k - y_k)^2 per example -- MSE to a regression target (e.g. STS-B score or teacher's prediction).

  A [B, 1] prediction is matched against a [B] target (and vice versa).
  """
  check_reduction(reduction)
  p = to_float(predictions)
  y = to_float(targets)
  if p.ndim == y.ndim + 1 and p.shape[-1] == 1:
    p = p[..., 0]
  elif y.ndim == p.ndim + 1 and y.shape[-1] == 1:
    y = y[..., 0]
  if p.shape != y.shape or p.ndim not in (1, 2):
    raise ValueError(f"regression_mse_loss: predictions {tuple(p.shape)} and targets "
                     f"{tuple(y.shape)} must both be [B] or [B, K]")
  sq = jnp.square(p - y)
  per = sq if sq.ndim == 1 else jnp.mean(sq, axis=-1)
  return reduce_loss(per, None, example_weight, reduction)
