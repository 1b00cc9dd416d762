"""Attention / relation KL losses (MiniLM v1, MiniLMv2, MobileBERT AT) against loop-based NumPy references."""

import math

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxdistill import losses as L

from loss_helpers import call, lengths_mask, rand


def softmax(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max())
  return e / e.sum()


def kl(p, q):
  return float(sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q) if pi > 0))


def np_row_kl_mean(t_rows, s_rows, mask):
  """t_rows(b, h, q, keys) / s_rows(...) give the distributions over the real ``keys``; KL is
  averaged over heads for each real query, then over all real queries of the batch."""
  b_, s_ = mask.shape
  tot, cnt = 0.0, 0
  for b in range(b_):
    keys = [k for k in range(s_) if mask[b, k]]
    for q in keys:
      heads = t_rows.heads
      tot += np.mean([kl(t_rows(b, h, q, keys), s_rows(b, h, q, keys)) for h in range(heads)])
      cnt += 1
  return tot / cnt


class Rows:
  def __init__(self, fn, heads):
    self.fn, self.heads = fn, heads

  def __call__(self, b, h, q, keys):
    return self.fn(b, h, q, keys)


@pytest.fixture
def rng():
  return np.random.default_rng(7)


def masked_probs(scores, mask):
  """Attention probabilities as a model would produce them (padded keys get 0)."""
  x = np.where(mask[:, None, None, :] != 0, scores, -1e9)
  x = x - x.max(-1, keepdims=True)
  e = np.exp(x)
  return (e / e.sum(-1, keepdims=True)).astype(np.float32)


# --------------------------------------------------------------------------- attention KL

@pytest.mark.parametrize("fn", [L.attention_kl_loss, L.minilm_attention_loss,
                                L.mobilebert_attention_loss])
def test_attention_kl_on_probabilities(rng, fn):
  mask = lengths_mask([5, 3, 1], 5)
  s = masked_probs(rand(rng, 3, 2, 5, 5, scale=2), mask)
  t = masked_probs(rand(rng, 3, 2, 5, 5, scale=2), mask)
  ref = np_row_kl_mean(Rows(lambda b, h, q, k: t[b, h, q, k] / t[b, h, q, k].sum(), 2),
                       Rows(lambda b, h, q, k: s[b, h, q, k] / s[b, h, q, k].sum(), 2), mask)
  np.testing.assert_allclose(float(call(fn, s, t, mask)), ref, rtol=1e-5)


def test_attention_kl_on_scores_with_any_mask_value(rng):
  mask = lengths_mask([4, 2], 4)
  s, t = rand(rng, 2, 3, 4, 4, scale=2), rand(rng, 2, 3, 4, 4, scale=2)
  ref = np_row_kl_mean(Rows(lambda b, h, q, k: softmax(t[b, h, q, k]), 3),
                       Rows(lambda b, h, q, k: softmax(s[b, h, q, k]), 3), mask)
  pad = (mask == 0)[:, None, None, :]
  for fill in (-np.inf, np.finfo(np.float32).min, -1e4, 123.0):  # whatever sits there is ignored
    got = call(L.attention_kl_loss, np.where(pad, fill, s).astype(np.float32),
               np.where(pad, fill, t).astype(np.float32), mask, from_logits=True)
    np.testing.assert_allclose(float(got), ref, rtol=1e-5)
  # bf16 scores masked with bf16's own finfo.min (as a bf16 model emits them)
  bmin = np.asarray(jax.numpy.finfo(jax.numpy.bfloat16).min, np.float32)
  s16 = jax.numpy.asarray(np.where(pad, bmin, s), jax.numpy.bfloat16)
  t16 = jax.numpy.asarray(np.where(pad, bmin, t), jax.numpy.bfloat16)
  got16 = call(L.minilm_attention_loss, s16, t16, mask, from_logits=True)
  assert got16.dtype == np.float32
  np.testing.assert_allclose(float(got16), ref, rtol=0.05, atol=0.02)


def test_attention_kl_matches_torch_kl_div_without_padding(rng):
  s, t = rand(rng, 2, 3, 4, 4), rand(rng, 2, 3, 4, 4)
  ref = F.kl_div(F.log_softmax(torch.tensor(s), -1), F.softmax(torch.tensor(t), -1),
                 reduction="sum").item() / (2 * 3 * 4)
  np.testing.assert_allclose(float(call(L.attention_kl_loss, s, t, from_logits=True)), ref,
                             rtol=1e-5)


def test_minilm_v1_head_count_error(rng):
  s, t = rand(rng, 2, 4, 3, 3), rand(rng, 2, 12, 3, 3)
  msg = (r"MiniLM v1 needs equal head counts \(teacher 12 vs student 4\); "
         r"use minilm_v2 relation heads instead")
  with pytest.raises(ValueError, match=msg):
    L.minilm_attention_loss(s, t)
  with pytest.raises(ValueError, match=msg):
    L.minilm_value_relation_loss(rand(rng, 2, 4, 3, 8), rand(rng, 2, 12, 3, 16))
  with pytest.raises(ValueError, match=r"equal head counts \(teacher 12 vs student 4\)"):
    L.mobilebert_attention_loss(s, t)


# --------------------------------------------------------------------------- MiniLM v1 value relation

def test_minilm_value_relation_with_different_head_dims(rng):
  mask = lengths_mask([4, 3, 2], 4)
  vs, vt = rand(rng, 3, 2, 4, 3), rand(rng, 3, 2, 4, 5)

  def rel(v):
    def row(b, h, q, keys):
      d = v.shape[-1]
      return softmax([np.dot(v[b, h, q], v[b, h, k]) / math.sqrt(d) for k in keys])
    return Rows(row, 2)

  ref = np_row_kl_mean(rel(vt), rel(vs), mask)
  np.testing.assert_allclose(float(call(L.minilm_value_relation_loss, vs, vt, mask)), ref,
                             rtol=1e-5)


# --------------------------------------------------------------------------- MiniLMv2

def np_minilm_v2(xs, xt, mask, r):
  """Concatenate heads by hand, split into r relation heads, loop over rows."""
  def rel(x):
    b_, n_ = x.shape[:2]
    merged = [np.concatenate([x[b, h] for h in range(n_)], axis=-1) for b in range(b_)]  # [S, H]
    dr = merged[0].shape[-1] // r

    def row(b, h, q, keys):
      xr = merged[b][:, h * dr:(h + 1) * dr]
      return softmax([np.dot(xr[q], xr[k]) / math.sqrt(dr) for k in keys])
    return Rows(row, r)
  return np_row_kl_mean(rel(xt), rel(xs), mask)


@pytest.mark.parametrize("num_rel", [1, 2, 4])
def test_minilm_v2_relation_mixed_heads_and_widths(rng, num_rel):
  mask = lengths_mask([5, 2, 4], 5)
  xs = rand(rng, 3, 2, 5, 4)  # student: 2 heads x 4 = 8
  xt = rand(rng, 3, 3, 5, 4)  # teacher: 3 heads x 4 = 12
  ref = np_minilm_v2(xs, xt, mask, num_rel)
  got = call(L.minilm_v2_relation_loss, xs, xt, mask, num_relation_heads=num_rel)
  np.testing.assert_allclose(float(got), ref, rtol=1e-5)


def test_minilm_v2_merged_input_and_qkv_sum(rng):
  mask = lengths_mask([3, 4], 4)
  s_qkv = tuple(rand(rng, 2, 2, 4, 3) for _ in range(3))
  t_qkv = tuple(rand(rng, 2, 4, 4, 3) for _ in range(3))
  parts = [np_minilm_v2(s, t, mask, 3) for s, t in zip(s_qkv, t_qkv)]
  got = call(L.minilm_v2_loss, s_qkv, t_qkv, mask, num_relation_heads=3)
  np.testing.assert_allclose(float(got), sum(parts), rtol=1e-5)
  merged = lambda x: np.concatenate([x[:, h] for h in range(x.shape[1])], -1)  # [B, S, H]
  got_m = call(L.minilm_v2_relation_loss, merged(s_qkv[0]), merged(t_qkv[0]), mask,
               num_relation_heads=3)
  np.testing.assert_allclose(float(got_m), parts[0], rtol=1e-5)


def test_minilm_v2_errors(rng):
  with pytest.raises(ValueError, match="student width 8 is not divisible by num_relation_heads=3"):
    L.minilm_v2_relation_loss(rand(rng, 1, 2, 3, 4), rand(rng, 1, 3, 3, 4), num_relation_heads=3)
  with pytest.raises(ValueError, match="teacher width 12 is not divisible by num_relation_heads=8"):
    L.minilm_v2_relation_loss(rand(rng, 1, 2, 3, 4), rand(rng, 1, 3, 3, 4), num_relation_heads=8)
  with pytest.raises(ValueError, match="num_relation_heads must be a positive int"):
    L.minilm_v2_relation_loss(rand(rng, 1, 2, 3, 4), rand(rng, 1, 2, 3, 4), num_relation_heads=0)
  with pytest.raises(ValueError, match=r"student \(B, S\) = \(1, 3\) != teacher \(1, 4\)"):
    L.minilm_v2_relation_loss(rand(rng, 1, 2, 3, 4), rand(rng, 1, 2, 4, 4), num_relation_heads=2)
