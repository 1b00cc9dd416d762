"""Output-layer losses against independent NumPy / PyTorch references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxdistill import losses as L

RTOL = 2e-5
ATOL = 2e-6


def np_log_softmax(x, axis=-1):
  x = x - x.max(axis=axis, keepdims=True)
  return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def rand(rng, *shape, scale=1.0):
  return (rng.normal(size=shape) * scale).astype(np.float32)


_JIT = {}


def _cached(kind, fn, kwargs, make):
  dyn = {k: v for k, v in kwargs.items() if isinstance(v, (np.ndarray, jax.Array))}
  static = {k: v for k, v in kwargs.items() if k not in dyn}
  key = (kind, fn, tuple(sorted(static.items())), tuple(sorted(dyn)))
  if key not in _JIT:
    _JIT[key] = jax.jit(make(lambda *a, _s=static, **d: fn(*a, **d, **_s)))
  return _JIT[key], dyn


def call(fn, *args, **kwargs):
  """fn(*args, **kwargs) under a jit cached per (fn, static kwargs): one XLA compile is far
  cheaper on CPU than op-by-op dispatch.  Positional args (temperature too) are traced."""
  f, dyn = _cached("call", fn, kwargs, lambda g: lambda a, d: g(*a, **d))
  return f(args, dyn)


def grad(fn, *args, **kwargs):
  """d fn / d args[0], cached like ``call``."""
  f, dyn = _cached("grad", fn, kwargs,
                   lambda g: jax.grad(lambda x, a, d: g(x, *a, **d)))
  return f(args[0], args[1:], dyn)


@pytest.fixture
def rng():
  return np.random.default_rng(0)


# --------------------------------------------------------------------------- KD (KL)

@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
@pytest.mark.parametrize("scale", [True, False])
def test_kd_kl_matches_torch(rng, temperature, scale):
  s, t = rand(rng, 6, 7, scale=3), rand(rng, 6, 7, scale=3)
  got = call(L.kd_kl_loss, s, t, temperature, scale_by_t2=scale)
  ref = F.kl_div(F.log_softmax(torch.tensor(s, dtype=torch.float64) / temperature, -1),
                 F.softmax(torch.tensor(t, dtype=torch.float64) / temperature, -1),
                 reduction="batchmean").item()
  if scale:
    ref *= temperature ** 2
  np.testing.assert_allclose(float(got), ref, rtol=RTOL, atol=ATOL)


def test_kd_kl_loop_reference_per_example(rng):
  s, t = rand(rng, 4, 5), rand(rng, 4, 5)
  T = 3.0
  ref = []
  for b in range(4):
    p = np.exp(t[b] / T) / np.exp(t[b] / T).sum()
    q = np.exp(s[b] / T) / np.exp(s[b] / T).sum()
    ref.append(T * T * sum(p[c] * (np.log(p[c]) - np.log(q[c])) for c in range(5)))
  got = call(L.kd_kl_loss, s, t, T, reduction="none")
  assert got.shape == (4,)
  np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(float(call(L.kd_kl_loss, s, t, T, reduction="sum")), sum(ref), rtol=1e-5)


def test_kd_kl_token_level_with_mask(rng):
  s, t = rand(rng, 3, 4, 6), rand(rng, 3, 4, 6)
  mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])
  T = 2.0
  tot, cnt = 0.0, 0
  for b in range(3):
    for i in range(4):
      if mask[b, i]:
        lp, lq = np_log_softmax(t[b, i] / T), np_log_softmax(s[b, i] / T)
        tot += T * T * np.sum(np.exp(lp) * (lp - lq))
        cnt += 1
  np.testing.assert_allclose(float(call(L.kd_kl_loss, s, t, T, mask=mask)), tot / cnt, rtol=1e-5)


def test_kd_zero_when_equal_and_nonnegative(rng):
  s = rand(rng, 5, 9, scale=4)
  assert abs(float(call(L.kd_kl_loss, s, s, 3.0))) < 1e-6
  for _ in range(5):
    a, b = rand(rng, 5, 9, scale=5), rand(rng, 5, 9, scale=5)
    assert float(call(L.kd_kl_loss, a, b, 1.5)) > 0


def test_masked_teacher_logits_are_finite_for_any_temperature(rng):
  s, t = rand(rng, 3, 5), rand(rng, 3, 5)
  t[:, 0] = -np.inf  # e.g. a vocabulary entry masked out in the teacher
  t[:, 1] = np.finfo(np.float32).min
  s[2, :] = np.finfo(np.float32).min  # a student row that is entirely "masked"
  vg = jax.jit(jax.value_and_grad(L.kd_kl_loss))
  for T in (0.5, 1.0, 4.0):
    val, g = vg(s, t, T)
    assert np.isfinite(float(val)) and np.all(np.isfinite(np.asarray(g))), T
  # rows 0-1 equal the KL computed over the 3 unmasked classes only
  val = call(L.kd_kl_loss, s[:2], t[:2], 0.5, scale_by_t2=False)
  ref = np.mean([np.sum(np.exp(np_log_softmax(t[b, 2:] / 0.5)) *
                        (np_log_softmax(t[b, 2:] / 0.5) - np_log_softmax(s[b] / 0.5)[2:]))
                 for b in range(2)])
  np.testing.assert_allclose(float(val), ref, rtol=1e-5)


# --------------------------------------------------------------------------- soft CE

@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_soft_cross_entropy_matches_numpy(rng, temperature):
  s, t = rand(rng, 5, 8), rand(rng, 5, 8)
  p = np.exp(np_log_softmax(t.astype(np.float64) / temperature))
  ref = -(p * np_log_softmax(s.astype(np.float64) / temperature)).sum(-1).mean()
  got = call(L.soft_cross_entropy_loss, s, t, temperature, scale_by_t2=False)
  np.testing.assert_allclose(float(got), ref, rtol=RTOL)
  got2 = call(L.soft_cross_entropy_loss, s, t, temperature)
  np.testing.assert_allclose(float(got2), ref * temperature ** 2, rtol=RTOL)
  np.testing.assert_allclose(float(call(L.tinybert_prediction_loss, s, t, temperature)), ref, rtol=RTOL)


def test_soft_ce_and_kl_have_same_student_gradient(rng):
  s, t = rand(rng, 4, 6), rand(rng, 4, 6)
  g1 = grad(L.kd_kl_loss, s, t, 3.0)
  g2 = grad(L.soft_cross_entropy_loss, s, t, 3.0)
  np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-5, atol=1e-7)
  # soft CE = KL + teacher entropy (times T^2)
  p = np.exp(np_log_softmax(np.asarray(t, np.float64) / 3.0))
  ent = -np.mean(np.sum(p * np.log(p), -1)) * 9
  np.testing.assert_allclose(float(call(L.soft_cross_entropy_loss, s, t, 3.0)),
                             float(call(L.kd_kl_loss, s, t, 3.0)) + ent, rtol=1e-5)


# --------------------------------------------------------------------------- T^2 scaling

def test_t2_scaling_keeps_gradient_magnitude():
  rng = np.random.default_rng(1)
  s, t = rand(rng, 8, 10, scale=2), rand(rng, 8, 10, scale=2)
  temps = [1.0, 2.0, 4.0, 8.0, 16.0]
  scaled = [float(np.linalg.norm(grad(L.kd_kl_loss, s, t, T, scale_by_t2=True)))
            for T in temps]
  unscaled = [float(np.linalg.norm(grad(L.kd_kl_loss, s, t, T, scale_by_t2=False)))
              for T in temps]
  assert max(scaled) / min(scaled) < 4.0, scaled
  # without T^2 the gradient shrinks like 1/T^2 (for large T exactly; check the trend)
  assert all(a > b for a, b in zip(unscaled, unscaled[1:])), unscaled
  assert unscaled[0] / unscaled[-1] > 16 ** 2 / 4
  np.testing.assert_allclose(np.array(unscaled) * np.array(temps) ** 2, scaled, rtol=1e-5)


# --------------------------------------------------------------------------- hard CE

def test_cross_entropy_matches_torch_with_ignore(rng):
  z = rand(rng, 7, 5, scale=2)
  y = np.array([0, 4, -100, 2, 1, -100, 3])
  ref = F.cross_entropy(torch.tensor(z), torch.tensor(y), ignore_index=-100).item()
  np.testing.assert_allclose(float(call(L.cross_entropy_loss, z, y)), ref, rtol=RTOL)
  none = np.asarray(call(L.cross_entropy_loss, z, y, reduction="none"))
  assert none[2] == 0 and none[5] == 0
  ref_none = F.cross_entropy(torch.tensor(z), torch.tensor(y), ignore_index=-100,
                             reduction="none").numpy()
  np.testing.assert_allclose(none, ref_none, rtol=RTOL, atol=ATOL)


def test_cross_entropy_example_weight(rng):
  z = rand(rng, 4, 3)
  y = np.array([0, 1, 2, 1])
  w = np.array([1.0, 0.0, 2.0, 1.0])
  per = F.cross_entropy(torch.tensor(z), torch.tensor(y), reduction="none").numpy()
  np.testing.assert_allclose(float(call(L.cross_entropy_loss, z, y, example_weight=w)),
                             (per * w).sum() / w.sum(), rtol=RTOL)
  np.testing.assert_allclose(float(call(L.cross_entropy_loss, z, y, example_weight=w, reduction="sum")),
                             (per * w).sum(), rtol=RTOL)
  zero = call(L.cross_entropy_loss, z, y, example_weight=np.zeros(4))
  assert float(zero) == 0.0


# --------------------------------------------------------------------------- MSE losses

def test_logit_mse_matches_torch(rng):
  s, t = rand(rng, 6, 4), rand(rng, 6, 4)
  ref = F.mse_loss(torch.tensor(s), torch.tensor(t)).item()
  np.testing.assert_allclose(float(call(L.logit_mse_loss, s, t)), ref, rtol=RTOL)
  # Tang et al.'s ||z_t - z_s||^2 is C times the per-example value
  per = np.asarray(call(L.logit_mse_loss, s, t, reduction="none")) * 4
  np.testing.assert_allclose(per, ((s - t) ** 2).sum(-1), rtol=RTOL)


def test_regression_mse(rng):
  p, y = rand(rng, 5, 1), rand(rng, 5)
  ref = np.mean([(p[i, 0] - y[i]) ** 2 for i in range(5)])
  np.testing.assert_allclose(float(call(L.regression_mse_loss, p, y)), ref, rtol=RTOL)
  np.testing.assert_allclose(float(call(L.regression_mse_loss, p[:, 0], y)), ref, rtol=RTOL)
  p2, y2 = rand(rng, 5, 3), rand(rng, 5, 3)
  w = np.array([1, 1, 0, 1, 0.5])
  per = ((p2 - y2) ** 2).mean(-1)
  np.testing.assert_allclose(float(call(L.regression_mse_loss, p2, y2, example_weight=w)),
                             (per * w).sum() / w.sum(), rtol=RTOL)
  with pytest.raises(ValueError, match="regression_mse_loss"):
    L.regression_mse_loss(p2, y)


# --------------------------------------------------------------------------- misc

def test_bad_temperature_and_shapes(rng):
  s = rand(rng, 2, 3)
  with pytest.raises(ValueError, match="temperature must be > 0"):
    L.kd_kl_loss(s, s, 0.0)
  with pytest.raises(ValueError, match="student shape"):
    L.kd_kl_loss(s, rand(rng, 2, 4))
  with pytest.raises(ValueError, match="mask must have shape"):
    L.kd_kl_loss(s, s, mask=np.ones(3))


def test_jit_with_static_reduction(rng):
  s, t = rand(rng, 3, 4), rand(rng, 3, 4)
  f = jax.jit(L.kd_kl_loss, static_argnames=("scale_by_t2", "reduction"))
  np.testing.assert_allclose(float(f(s, t, 2.0, reduction="sum")),
                             float(call(L.kd_kl_loss, s, t, 2.0, reduction="sum")), rtol=1e-6)
  # temperature may be traced
  g = jax.jit(lambda s, t, T: L.kd_kl_loss(s, t, T))
  np.testing.assert_allclose(float(g(s, t, 2.0)), float(call(L.kd_kl_loss, s, t, 2.0)), rtol=1e-6)
