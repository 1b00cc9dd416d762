"""Intermediate-representation losses on hidden states and attention scores.

BERT-PKD, DistilBERT (cosine + MLM), TinyBERT (embedding / hidden / attention-score) and
MobileBERT (feature map + mean/variance statistics).  Hidden states are [B, S, H];
attention scores [B, N, S, S] (query axis, then key axis); attention_mask [B, S] with
1 = real token.  Token-level losses average over real tokens of the whole batch (see
:mod:`jaxdistill.losses._common` for the reduction convention).
"""

from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from ._common import (check_ndim, check_reduction, check_same_shape, reduce_loss, safe_div,
                      safe_norm, sum_over_layer_pairs, to_float, token_mask)
from .soft_targets import cross_entropy_loss

Array = jax.Array


def _project(x: Array, kernel: Optional[Array], bias: Optional[Array], width: int,
             what: str) -> Array:
  """x [..., d_s] @ kernel [d_s, d_t] (+ bias [d_t]); checks that the result has ``width``."""
  if kernel is None:
    if bias is not None:
      raise ValueError(f"{what}: projection_bias given without projection_kernel")
    if x.shape[-1] != width:
      raise ValueError(f"{what}: student width {x.shape[-1]} != teacher width {width}; pass "
                       f"projection_kernel [{x.shape[-1]}, {width}]")
    return x
  kernel = to_float(kernel)
  if kernel.shape != (x.shape[-1], width):
    raise ValueError(f"{what}: projection_kernel must be [d_s, d_t] = "
                     f"{(x.shape[-1], width)}; got {tuple(kernel.shape)}")
  x = x @ kernel
  if bias is not None:
    bias = to_float(bias)
    if bias.shape != (width,):
      raise ValueError(f"{what}: projection_bias must be [{width}]; got {tuple(bias.shape)}")
    x = x + bias
  return x


def _hidden_pair(student_hidden, teacher_hidden, attention_mask, what):
  s = to_float(student_hidden)
  t = to_float(teacher_hidden)
  check_ndim(s, 3, f"{what}: student hidden", "[B, S, H]")
  check_ndim(t, 3, f"{what}: teacher hidden", "[B, S, H]")
  if s.shape[:2] != t.shape[:2]:
    raise ValueError(f"{what}: student [B, S] = {tuple(s.shape[:2])} != teacher "
                     f"{tuple(t.shape[:2])}")
  return s, t, token_mask(attention_mask, s.shape[0], s.shape[1])


def pkd_loss(student_hidden_states: Sequence[Array],  # L_s+1 x [B, S, H_s], index 0 = embeddings
             teacher_hidden_states: Sequence[Array],  # L_t+1 x [B, S, H_t]
             layer_pairs: Sequence[tuple[int, int]],  # (student_layer, teacher_layer), hidden_states indices
             *,
             projection_kernel: Optional[Array] = None,  # [H_s, H_t], only if widths differ
             projection_bias: Optional[Array] = None,  # [H_t]
             eps: float = 1e-12,
             example_weight: Optional[Array] = None,  # [B]
             reduction: str = "mean") -> Array:
  """sum_pairs || h_s/||h_s|| - h_t/||h_t|| ||_2^2 on [CLS] (position 0) -- BERT-PKD, Sun et al. 2019.

  Per example: summed over the hidden axis and over layer pairs (the paper's formula);
  then averaged over examples.  ||h|| is clamped below by ``eps`` as in
  torch.nn.functional.normalize.  The reference PKD code uses F.mse_loss, which equals
  this value divided by (len(layer_pairs) * H).
  """
  check_reduction(reduction)

  def pair_term(student_hidden, teacher_hidden):  # [B] per example, for one layer pair
    s, t, _ = _hidden_pair(student_hidden, teacher_hidden, None, "pkd_loss")
    hs = _project(s[:, 0, :], projection_kernel, projection_bias, t.shape[-1], "pkd_loss")
    ht = t[:, 0, :]
    d = hs / safe_norm(hs, eps) - ht / safe_norm(ht, eps)
    return jnp.sum(d * d, axis=-1)

  per = sum_over_layer_pairs(pair_term, student_hidden_states, teacher_hidden_states, layer_pairs,
                             what="pkd_loss pair", index_name="hidden-state index")
  return reduce_loss(per, None, example_weight, reduction)


def cosine_embedding_loss(student_hidden: Array,  # [B, S, H]
                          teacher_hidden: Array,  # [B, S, H]
                          attention_mask: Optional[Array] = None,  # [B, S]
                          *,
                          eps: float = 1e-8,
                          example_weight: Optional[Array] = None,
                          reduction: str = "mean") -> Array:
  """1 - cos(h_s, h_t) per real token -- DistilBERT L_cos, Sanh et al. 2019.

  cos = h_s.h_t / (max(||h_s||, eps) max(||h_t||, eps)); averaged over non-padding tokens.
  """
  check_reduction(reduction)
  s, t, m = _hidden_pair(student_hidden, teacher_hidden, attention_mask, "cosine_embedding_loss")
  check_same_shape(s, t, "cosine_embedding_loss")
  cos = jnp.sum(s * t, axis=-1) / (safe_norm(s, eps, keepdims=False) *
                                   safe_norm(t, eps, keepdims=False))
  return reduce_loss(1.0 - cos, m, example_weight, reduction)


def mlm_cross_entropy_loss(logits: Array,  # [B, S, V]
                           labels: Array,  # [B, S] int, ignore_index where not masked
                           *,
                           mask: Optional[Array] = None,  # [B, S], 1 = masked-LM position
                           ignore_index: int = -100,
                           example_weight: Optional[Array] = None,
                           reduction: str = "mean") -> Array:
  """-log softmax(z)_y over masked positions only -- DistilBERT L_mlm, Sanh et al. 2019 (BERT MLM).

  A position counts iff labels != ignore_index and (mask is None or mask == 1).
  """
  check_ndim(jnp.asarray(logits), 3, "mlm_cross_entropy_loss: logits", "[B, S, V]")
  return cross_entropy_loss(logits, labels, mask=mask, ignore_index=ignore_index,
                            example_weight=example_weight, reduction=reduction)


def tinybert_hidden_loss(student_hidden: Array,  # [B, S, H_s]
                         teacher_hidden: Array,  # [B, S, H_t]
                         attention_mask: Optional[Array] = None,  # [B, S]
                         *,
                         projection_kernel: Optional[Array] = None,  # [H_s, H_t] (W_h)
                         projection_bias: Optional[Array] = None,  # [H_t]
                         example_weight: Optional[Array] = None,
                         reduction: str = "mean") -> Array:
  """mean_h (H_s W_h + b - H_t)^2 per real token -- TinyBERT hidden-state loss, Jiao et al. 2020.

  The projection is required when H_s != H_t.  Averaged over the teacher width and over
  real tokens (TinyBERT's code averages over all B*S*H_t entries, padding included).
  """
  check_reduction(reduction)
  s, t, m = _hidden_pair(student_hidden, teacher_hidden, attention_mask, "tinybert_hidden_loss")
  s = _project(s, projection_kernel, projection_bias, t.shape[-1], "tinybert_hidden_loss")
  return reduce_loss(jnp.mean(jnp.square(s - t), axis=-1), m, example_weight, reduction)


def tinybert_embedding_loss(student_embeddings: Array,  # [B, S, E_s]
                            teacher_embeddings: Array,  # [B, S, E_t]
                            attention_mask: Optional[Array] = None,  # [B, S]
                            *,
                            projection_kernel: Optional[Array] = None,  # [E_s, E_t] (W_e)
                            projection_bias: Optional[Array] = None,  # [E_t]
                            example_weight: Optional[Array] = None,
                            reduction: str = "mean") -> Array:
  """mean_h (E_s W_e + b - E_t)^2 per real token -- TinyBERT embedding-layer loss, Jiao et al. 2020.

  Same formula as tinybert_hidden_loss, applied to hidden_states[0] (embedding output).
  """
  return tinybert_hidden_loss(student_embeddings, teacher_embeddings, attention_mask,
                              projection_kernel=projection_kernel,
                              projection_bias=projection_bias,
                              example_weight=example_weight, reduction=reduction)


def tinybert_attention_loss(student_scores: Array,  # [B, N, S, S] pre-softmax
                            teacher_scores: Array,  # [B, N, S, S] pre-softmax
                            attention_mask: Optional[Array] = None,  # [B, S]
                            *,
                            neg_threshold: Optional[float] = -1e2,
                            example_weight: Optional[Array] = None,
                            reduction: str = "mean") -> Array:
  """mean_{h, real k} (A_s - A_t)^2 per real query token, on PRE-softmax scores -- TinyBERT, Jiao et al. 2020.

  Entries whose query or key is padding are zeroed in both student and teacher (so they
  contribute nothing), and so is any entry <= ``neg_threshold`` (TinyBERT's
  ``torch.where(score <= -1e2, 0, score)``, which catches additive masks such as -1e4 or
  finfo.min; None disables it).  Per query token the squared error is averaged over heads
  and real keys; then over real query tokens.  Equal head counts are required.
  """
  check_reduction(reduction)
  s = to_float(student_scores)
  t = to_float(teacher_scores)
  check_ndim(s, 4, "tinybert_attention_loss: student scores", "[B, N, S, S]")
  check_ndim(t, 4, "tinybert_attention_loss: teacher scores", "[B, N, S, S]")
  if s.shape[1] != t.shape[1]:
    raise ValueError(f"TinyBERT attention loss needs equal head counts (teacher {t.shape[1]} vs "
                     f"student {s.shape[1]}); use minilm_v2_relation_loss instead")
  check_same_shape(s, t, "tinybert_attention_loss")
  b, n, sq, sk = s.shape
  if sq != sk:
    raise ValueError(f"attention scores must be [B, N, S, S]; got {tuple(s.shape)}")
  m = token_mask(attention_mask, b, sq)
  pair = (m[:, None, :, None] * m[:, None, None, :]) != 0  # [B, 1, S, S]
  keep_s, keep_t = pair, pair
  if neg_threshold is not None:
    keep_s = keep_s & (s > neg_threshold)
    keep_t = keep_t & (t > neg_threshold)
  s = jnp.where(keep_s, s, jnp.zeros_like(s))
  t = jnp.where(keep_t, t, jnp.zeros_like(t))
  sq_err = jnp.sum(jnp.square(s - t), axis=(1, 3))  # [B, S_q]
  n_keys = jnp.sum(m, axis=-1, keepdims=True)  # [B, 1]
  per = safe_div(sq_err, n * n_keys)
  return reduce_loss(per, m, example_weight, reduction)


def _layer_norm(x: Array, epsilon: float) -> Array:
  mu = jnp.mean(x, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
  return (x - mu) / jnp.sqrt(var + epsilon)


def mobilebert_feature_map_loss(student_hidden: Array,  # [B, S, H]
                                teacher_hidden: Array,  # [B, S, H]
                                attention_mask: Optional[Array] = None,  # [B, S]
                                *,
                                epsilon: float = 1e-5,
                                example_weight: Optional[Array] = None,
                                reduction: str = "mean") -> Array:
  """mean_h (LN(H_t) - LN(H_s))^2 per real token -- MobileBERT feature-map transfer, Sun et al. 2020.

  LN(x) = (x - mean_h x) / sqrt(var_h x + epsilon): parameter-free layer norm over the
  hidden axis of each token (the TF Model Garden code uses a frozen Keras LayerNormalization,
  epsilon 1e-3).  Equal widths are required (MobileBERT matches feature-map sizes).
  """
  check_reduction(reduction)
  s, t, m = _hidden_pair(student_hidden, teacher_hidden, attention_mask,
                         "mobilebert_feature_map_loss")
  check_same_shape(s, t, "mobilebert_feature_map_loss")
  per = jnp.mean(jnp.square(_layer_norm(t, epsilon) - _layer_norm(s, epsilon)), axis=-1)
  return reduce_loss(per, m, example_weight, reduction)


def mobilebert_mean_loss(student_hidden: Array,  # [B, S, H_s]
                         teacher_hidden: Array,  # [B, S, H_t]
                         attention_mask: Optional[Array] = None,  # [B, S]
                         *,
                         penalty: str = "abs",
                         example_weight: Optional[Array] = None,
                         reduction: str = "mean") -> Array:
  """|mu_h(H_t) - mu_h(H_s)| per real token -- MobileBERT feature-statistics (mean) term, Sun et al. 2020.

  mu_h is the mean over the hidden axis of one token.  ``penalty="squared"`` uses
  (mu_t - mu_s)^2 instead, as the TF Model Garden MobileBERT code ("beta" loss) does.
  Widths may differ.
  """
  check_reduction(reduction)
  if penalty not in ("abs", "squared"):
    raise ValueError(f"penalty must be 'abs' or 'squared'; got {penalty!r}")
  s, t, m = _hidden_pair(student_hidden, teacher_hidden, attention_mask, "mobilebert_mean_loss")
  diff = jnp.mean(t, axis=-1) - jnp.mean(s, axis=-1)
  per = jnp.abs(diff) if penalty == "abs" else jnp.square(diff)
  return reduce_loss(per, m, example_weight, reduction)


def mobilebert_variance_loss(student_hidden: Array,  # [B, S, H_s]
                             teacher_hidden: Array,  # [B, S, H_t]
                             attention_mask: Optional[Array] = None,  # [B, S]
                             *,
                             example_weight: Optional[Array] = None,
                             reduction: str = "mean") -> Array:
  """|sigma_h^2(H_t) - sigma_h^2(H_s)| per real token -- MobileBERT feature-statistics (variance) term, Sun et al. 2020.

  sigma_h^2 is the population variance (ddof=0) over the hidden axis of one token.
  Widths may differ.
  """
  check_reduction(reduction)
  s, t, m = _hidden_pair(student_hidden, teacher_hidden, attention_mask,
                         "mobilebert_variance_loss")

  def var(x):
    return jnp.mean(jnp.square(x - jnp.mean(x, axis=-1, keepdims=True)), axis=-1)

  return reduce_loss(jnp.abs(var(t) - var(s)), m, example_weight, reduction)
