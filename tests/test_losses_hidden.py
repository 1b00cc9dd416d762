"""Hidden-state / attention-score losses against independent NumPy / PyTorch references.

References are written directly from the papers (loops where that is clearer) and never
call jaxdistill code.
"""

import jax
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxdistill import losses as L

from loss_helpers import call, lengths_mask, rand


@pytest.fixture
def rng():
  return np.random.default_rng(42)


# --------------------------------------------------------------------------- BERT-PKD

def np_pkd(student_states, teacher_states, pairs, kernel=None, bias=None):
  b = student_states[0].shape[0]
  per = np.zeros(b)
  for i in range(b):
    for s_idx, t_idx in pairs:
      hs = student_states[s_idx][i, 0].astype(np.float64)
      if kernel is not None:
        hs = hs @ kernel + (0 if bias is None else bias)
      ht = teacher_states[t_idx][i, 0].astype(np.float64)
      d = hs / np.linalg.norm(hs) - ht / np.linalg.norm(ht)
      per[i] += sum(v * v for v in d)
  return per


def test_pkd_matches_paper_formula(rng):
  student = tuple(rand(rng, 4, 3, 8) for _ in range(4))  # 3 layers + embeddings
  teacher = tuple(rand(rng, 4, 3, 8) for _ in range(7))  # 6 layers + embeddings
  pairs = [(1, 2), (2, 4)]
  ref = np_pkd(student, teacher, pairs)
  np.testing.assert_allclose(np.asarray(call(L.pkd_loss, student, teacher, layer_pairs=pairs,
                                             reduction="none")), ref, rtol=1e-5)
  np.testing.assert_allclose(float(call(L.pkd_loss, student, teacher, layer_pairs=pairs)),
                             ref.mean(), rtol=1e-5)
  # the PKD reference code's F.mse_loss(normalize(.)) is ours / (num_pairs * H)
  st = torch.stack([F.normalize(torch.tensor(student[s][:, 0]), dim=-1) for s, _ in pairs], 1)
  tt = torch.stack([F.normalize(torch.tensor(teacher[t][:, 0]), dim=-1) for _, t in pairs], 1)
  np.testing.assert_allclose(F.mse_loss(st, tt).item() * len(pairs) * 8, ref.mean(), rtol=1e-5)


def test_pkd_mixed_widths_with_projection_and_weights(rng):
  student = tuple(rand(rng, 3, 2, 4) for _ in range(3))
  teacher = tuple(rand(rng, 3, 2, 6) for _ in range(5))
  kernel, bias = rand(rng, 4, 6), rand(rng, 6)
  pairs = [(0, 0), (2, 4)]
  w = np.array([1.0, 0.0, 3.0], np.float32)
  ref = np_pkd(student, teacher, pairs, kernel, bias)
  got = call(L.pkd_loss, student, teacher, layer_pairs=pairs, projection_kernel=kernel,
             projection_bias=bias, example_weight=w)
  np.testing.assert_allclose(float(got), (ref * w).sum() / w.sum(), rtol=1e-5)
  with pytest.raises(ValueError, match="student width 4 != teacher width 6"):
    L.pkd_loss(student, teacher, pairs)
  with pytest.raises(ValueError, match="teacher hidden-state index 5 is out of range 0..4"):
    L.pkd_loss(student, teacher, [(1, 5)], projection_kernel=kernel)


# --------------------------------------------------------------------------- DistilBERT

def test_cosine_embedding_matches_torch(rng):
  s, t = rand(rng, 3, 6, 5), rand(rng, 3, 6, 5)
  mask = lengths_mask([6, 2, 4], 6)
  sel = torch.tensor(mask.reshape(-1) == 1)
  ref = torch.nn.CosineEmbeddingLoss()(torch.tensor(s).reshape(-1, 5)[sel],
                                       torch.tensor(t).reshape(-1, 5)[sel],
                                       torch.ones(int(sel.sum()))).item()
  np.testing.assert_allclose(float(call(L.cosine_embedding_loss, s, t, mask)), ref, rtol=1e-5)
  # scale invariance: cos does not care about norms
  np.testing.assert_allclose(float(call(L.cosine_embedding_loss, 3 * s, 0.5 * t, mask)), ref,
                             rtol=1e-5)


def test_mlm_cross_entropy_matches_torch(rng):
  logits = rand(rng, 2, 5, 11, scale=2)
  labels = np.array([[3, -100, 7, -100, 1], [-100, -100, 10, 0, 2]], np.int32)
  extra_mask = np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], np.int32)  # drops position (0, 4)
  ref_labels = np.where(extra_mask == 1, labels, -100)
  ref = F.cross_entropy(torch.tensor(logits).reshape(-1, 11),
                        torch.tensor(ref_labels.reshape(-1)).long(), ignore_index=-100).item()
  got = call(L.mlm_cross_entropy_loss, logits, labels, mask=extra_mask)
  np.testing.assert_allclose(float(got), ref, rtol=1e-5)
  ref_all = F.cross_entropy(torch.tensor(logits).reshape(-1, 11),
                            torch.tensor(labels.reshape(-1)).long()).item()
  np.testing.assert_allclose(float(call(L.mlm_cross_entropy_loss, logits, labels)), ref_all,
                             rtol=1e-5)


# --------------------------------------------------------------------------- TinyBERT

def np_masked_token_mean(values, mask):
  tot, cnt = 0.0, 0
  for b in range(mask.shape[0]):
    for i in range(mask.shape[1]):
      if mask[b, i]:
        tot += values[b, i]
        cnt += 1
  return tot / cnt


def test_tinybert_hidden_with_projection(rng):
  s, t = rand(rng, 3, 4, 5), rand(rng, 3, 4, 7)
  kernel, bias = rand(rng, 5, 7), rand(rng, 7)
  mask = lengths_mask([4, 1, 3], 4)
  vals = np.zeros((3, 4))
  for b in range(3):
    for i in range(4):
      proj = s[b, i].astype(np.float64) @ kernel + bias
      vals[b, i] = np.mean((proj - t[b, i]) ** 2)
  ref = np_masked_token_mean(vals, mask)
  got = call(L.tinybert_hidden_loss, s, t, mask, projection_kernel=kernel, projection_bias=bias)
  np.testing.assert_allclose(float(got), ref, rtol=1e-5)
  got_e = call(L.tinybert_embedding_loss, s, t, mask, projection_kernel=kernel,
               projection_bias=bias)
  np.testing.assert_allclose(float(got_e), ref, rtol=1e-5)
  with pytest.raises(ValueError, match="pass projection_kernel"):
    L.tinybert_hidden_loss(s, t, mask)
  with pytest.raises(ValueError, match=r"projection_kernel must be \[d_s, d_t\]"):
    L.tinybert_hidden_loss(s, t, mask, projection_kernel=kernel.T)


def test_tinybert_hidden_equals_torch_mse_without_padding(rng):
  s, t = rand(rng, 2, 3, 4), rand(rng, 2, 3, 4)
  ref = F.mse_loss(torch.tensor(s), torch.tensor(t)).item()
  np.testing.assert_allclose(float(call(L.tinybert_hidden_loss, s, t)), ref, rtol=1e-5)


def np_tinybert_attention(s, t, mask, thr=-1e2):
  b_, n_, q_, _ = s.shape
  tot, cnt = 0.0, 0
  for b in range(b_):
    keys = [k for k in range(q_) if mask[b, k]]
    for q in range(q_):
      if not mask[b, q]:
        continue
      acc = 0.0
      for h in range(n_):
        for k in keys:
          sv = 0.0 if s[b, h, q, k] <= thr else float(s[b, h, q, k])
          tv = 0.0 if t[b, h, q, k] <= thr else float(t[b, h, q, k])
          acc += (sv - tv) ** 2
      tot += acc / (n_ * len(keys))
      cnt += 1
  return tot / cnt


def test_tinybert_attention_masks_and_large_negatives(rng):
  s, t = rand(rng, 3, 2, 5, 5, scale=3), rand(rng, 3, 2, 5, 5, scale=3)
  mask = lengths_mask([5, 3, 2], 5)
  key_pad = (mask == 0)[:, None, None, :]
  s = np.where(key_pad, np.finfo(np.float32).min, s)  # HF-style masking in the student
  t = np.where(key_pad, np.float32(-1e4), t)  # TinyBERT-style additive mask in the teacher
  t[0, 1, 2, 3] = -500.0  # a real entry that TinyBERT's threshold zeroes
  got = call(L.tinybert_attention_loss, s, t, mask)
  np.testing.assert_allclose(float(got), np_tinybert_attention(s, t, mask), rtol=1e-5)
  assert np.isfinite(float(got))


def test_tinybert_attention_equals_original_code_without_padding(rng):
  # TinyBERT: loss_mse(where(s <= -1e2, 0, s), where(t <= -1e2, 0, t)) over the full tensor
  s, t = rand(rng, 2, 3, 4, 4, scale=50), rand(rng, 2, 3, 4, 4, scale=50)
  ts, tt = torch.tensor(s), torch.tensor(t)
  ref = F.mse_loss(torch.where(ts <= -1e2, torch.zeros_like(ts), ts),
                   torch.where(tt <= -1e2, torch.zeros_like(tt), tt)).item()
  np.testing.assert_allclose(float(call(L.tinybert_attention_loss, s, t)), ref, rtol=1e-5)


def test_tinybert_attention_head_count_error(rng):
  with pytest.raises(ValueError, match=r"equal head counts \(teacher 4 vs student 2\)"):
    L.tinybert_attention_loss(rand(rng, 1, 2, 3, 3), rand(rng, 1, 4, 3, 3))


# --------------------------------------------------------------------------- MobileBERT

def test_mobilebert_feature_map_matches_torch_layer_norm(rng):
  s, t = rand(rng, 3, 4, 6, scale=2) + 1, rand(rng, 3, 4, 6)
  mask = lengths_mask([4, 2, 1], 4)
  ln_s = F.layer_norm(torch.tensor(s, dtype=torch.float64), (6,), eps=1e-5)
  ln_t = F.layer_norm(torch.tensor(t, dtype=torch.float64), (6,), eps=1e-5)
  vals = ((ln_t - ln_s) ** 2).mean(-1).numpy()
  got = call(L.mobilebert_feature_map_loss, s, t, mask)
  np.testing.assert_allclose(float(got), np_masked_token_mean(vals, mask), rtol=1e-5)
  # invariant to per-token shift and scale of the student (that is what the LN removes)
  got2 = call(L.mobilebert_feature_map_loss, 3 * s - 7, t, mask)
  np.testing.assert_allclose(float(got2), float(got), rtol=1e-3)


def test_mobilebert_mean_and_variance_terms(rng):
  s, t = rand(rng, 2, 5, 4, scale=2), rand(rng, 2, 5, 6) + 0.5
  mask = lengths_mask([5, 3], 5)
  mean_abs, mean_sq, var_abs = np.zeros((2, 5)), np.zeros((2, 5)), np.zeros((2, 5))
  for b in range(2):
    for i in range(5):
      mu_s, mu_t = np.mean(s[b, i].astype(np.float64)), np.mean(t[b, i].astype(np.float64))
      mean_abs[b, i] = abs(mu_t - mu_s)
      mean_sq[b, i] = (mu_t - mu_s) ** 2
      var_abs[b, i] = abs(np.var(t[b, i].astype(np.float64)) - np.var(s[b, i].astype(np.float64)))
  np.testing.assert_allclose(float(call(L.mobilebert_mean_loss, s, t, mask)),
                             np_masked_token_mean(mean_abs, mask), rtol=1e-5)
  np.testing.assert_allclose(float(call(L.mobilebert_mean_loss, s, t, mask, penalty="squared")),
                             np_masked_token_mean(mean_sq, mask), rtol=1e-5)
  np.testing.assert_allclose(float(call(L.mobilebert_variance_loss, s, t, mask)),
                             np_masked_token_mean(var_abs, mask), rtol=1e-5)
  with pytest.raises(ValueError, match="penalty must be 'abs' or 'squared'"):
    L.mobilebert_mean_loss(s, t, mask, penalty="l1")


# --------------------------------------------------------------------------- helpers / errors

def test_sum_over_layer_pairs_with_layer_map(rng):
  student = tuple(rand(rng, 2, 3, 4) for _ in range(3))
  teacher = tuple(rand(rng, 2, 3, 4) for _ in range(5))
  pairs = L.make_layer_map("uniform", 2, 4)
  assert pairs == [(1, 2), (2, 4)]
  total = L.sum_over_layer_pairs(lambda a, b: call(L.tinybert_hidden_loss, a, b), student,
                                 teacher, pairs)
  ref = sum(np.mean((student[i] - teacher[j]) ** 2) for i, j in pairs)
  np.testing.assert_allclose(float(total), ref, rtol=1e-5)
  with pytest.raises(ValueError, match="teacher index 5 is out of range 0..4"):
    L.sum_over_layer_pairs(L.tinybert_hidden_loss, student, teacher, [(1, 5)])


def test_shape_errors_are_clear(rng):
  with pytest.raises(ValueError, match=r"attention_mask must have shape \[B, S\]"):
    L.cosine_embedding_loss(rand(rng, 2, 3, 4), rand(rng, 2, 3, 4), np.ones((2, 4)))
  with pytest.raises(ValueError, match=r"must be \[B, S, H\]"):
    L.mobilebert_feature_map_loss(rand(rng, 2, 4), rand(rng, 2, 4))
  with pytest.raises(ValueError, match=r"example_weight must have shape \[B\]"):
    L.cosine_embedding_loss(rand(rng, 2, 3, 4), rand(rng, 2, 3, 4), example_weight=np.ones(3))
