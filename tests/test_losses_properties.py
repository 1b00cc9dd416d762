"""Cross-cutting properties of every loss in jaxdistill.losses.

For each loss: unknown reduction is rejected; bf16 in -> float32 out; zero when the
student equals the teacher (where true); non-negative; finite values and gradients with
a fully padded row and with a fully padded batch; invariant to whatever sits in padded
positions / zero-weight examples; "none"/"sum"/"mean" consistent; gradient equals
central finite differences in float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill import losses as L

B, S = 3, 5
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], np.int32)  # row 2 fully padded
WEIGHT = np.array([1.0, 1.0, 0.0], np.float32)  # example 2 is a dummy

# --------------------------------------------------------------------------- cached jit helpers

_JIT = {}


def _freeze(v):
  return tuple(_freeze(x) for x in v) if isinstance(v, (list, tuple)) else v


def _split(kwargs):
  static, dyn = {}, {}
  for k, v in kwargs.items():
    if isinstance(v, (np.ndarray, jax.Array)):
      dyn[k] = v
    else:
      static[k] = _freeze(v)
  return static, dyn


def probe(fn, student, *args, **kwargs):
  """{"mean", "sum", "none", "grad"} of fn(student, *args, **kwargs) from one cached jit.

  "grad" is d mean / d student.  One XLA compile per (loss, static kwargs, shapes and
  dtypes) keeps the suite fast on CPU (op-by-op dispatch would compile every primitive).
  """
  static, dyn = _split(kwargs)
  key = (fn, tuple(sorted(static.items())), tuple(sorted(dyn)))
  if key not in _JIT:
    def run(x, a, d, _s=static):
      out = {r: fn(x, *a, **d, **_s, reduction=r) for r in ("sum", "none")}
      out["mean"], out["grad"] = jax.value_and_grad(lambda y: fn(y, *a, **d, **_s))(x)
      return out
    _JIT[key] = jax.jit(run)
  return _JIT[key](student, args, dyn)


def call(fn, *args, reduction="mean", **kwargs):
  return probe(fn, *args, **kwargs)[reduction]


# --------------------------------------------------------------------------- cases


def _r(rng, *shape, scale=1.0):
  return (rng.normal(size=shape) * scale).astype(np.float32)


def _probs(rng, n):
  x = _r(rng, B, n, S, S, scale=2)
  x = np.where(MASK[:, None, None, :] != 0, x, -np.inf)
  x = x - np.max(np.where(np.isfinite(x), x, -1e30), -1, keepdims=True)
  e = np.where(np.isfinite(x), np.exp(x), 0.0)
  return (e / np.maximum(e.sum(-1, keepdims=True), 1e-30)).astype(np.float32)


def _scores(rng, n):
  x = _r(rng, B, n, S, S, scale=2)
  return np.where(MASK[:, None, None, :] != 0, x, np.float32(-1e4)).astype(np.float32)


def _widen_heads(x, width):
  """Zero-pad the last axis to ``width`` and rescale so that x x^T / sqrt(width) is unchanged."""
  d = x.shape[-1]
  pad = np.zeros(x.shape[:-1] + (width - d,), x.dtype)
  return (np.concatenate([x, pad], -1) * (width / d) ** 0.25).astype(np.float32)


def _widen_relations(x, num_rel, t_heads, t_head_dim):
  """Student [B, N, S, D] -> teacher [B, t_heads, S, t_head_dim] with identical MiniLMv2 relations.

  Heads are concatenated by hand (loop), each of the ``num_rel`` relation slices is widened
  with _widen_heads, and the result is split back into teacher heads.
  """
  merged = np.concatenate([x[:, h] for h in range(x.shape[1])], axis=-1)  # [B, S, H_s]
  dr = merged.shape[-1] // num_rel
  wide = (t_heads * t_head_dim) // num_rel
  merged_t = np.concatenate([_widen_heads(merged[..., r * dr:(r + 1) * dr], wide)
                             for r in range(num_rel)], axis=-1)  # [B, S, H_t]
  return np.stack([merged_t[..., h * t_head_dim:(h + 1) * t_head_dim] for h in range(t_heads)], 1)


class Case:
  def __init__(self, name, fn, build, *, level, seq_axes=(), equal=None, nonneg=True):
    self.name, self.fn, self.build, self.level = name, fn, build, level
    self.seq_axes = seq_axes  # sequence axes of the student/teacher arrays (token level)
    self.equal = equal  # student -> teacher making the loss 0, or None
    self.nonneg = nonneg

  def inputs(self, seed=0):
    """(student, teacher, kwargs); kwargs carry mask/attention_mask and example_weight."""
    return self.build(np.random.default_rng(seed))


def _mk_cases():
  W = np.random.default_rng(9).normal(size=(4, 6)).astype(np.float32) * 0.5
  bias = np.random.default_rng(10).normal(size=(6,)).astype(np.float32)
  am = dict(attention_mask=MASK)
  cases = [
      Case("kd_kl", L.kd_kl_loss,
           lambda r: (_r(r, B, 7, scale=2), _r(r, B, 7, scale=2),
                      dict(temperature=2.0, example_weight=WEIGHT)),
           level="example", equal=lambda s: s),
      Case("kd_kl_tokens", L.kd_kl_loss,
           lambda r: (_r(r, B, S, 7), _r(r, B, S, 7), dict(temperature=3.0, mask=MASK)),
           level="token", seq_axes=(1,), equal=lambda s: s),
      Case("soft_ce", L.soft_cross_entropy_loss,
           lambda r: (_r(r, B, 7), _r(r, B, 7), dict(temperature=2.0, example_weight=WEIGHT)),
           level="example"),
      Case("tinybert_prediction", L.tinybert_prediction_loss,
           lambda r: (_r(r, B, S, 7), _r(r, B, S, 7), dict(mask=MASK)),
           level="token", seq_axes=(1,)),
      Case("cross_entropy", L.cross_entropy_loss,
           lambda r: (_r(r, B, 7), np.array([1, -100, 3], np.int32), dict(example_weight=WEIGHT)),
           level="example"),
      Case("logit_mse", L.logit_mse_loss,
           lambda r: (_r(r, B, 7), _r(r, B, 7), dict(example_weight=WEIGHT)),
           level="example", equal=lambda s: s),
      Case("regression_mse", L.regression_mse_loss,
           lambda r: (_r(r, B), _r(r, B), dict(example_weight=WEIGHT)),
           level="example", equal=lambda s: s),
      Case("pkd", L.pkd_loss,
           lambda r: (tuple(_r(r, B, S, 4) for _ in range(3)), tuple(_r(r, B, S, 6) for _ in range(3)),
                      dict(layer_pairs=[(1, 1), (2, 2)], projection_kernel=W,
                           projection_bias=bias, example_weight=WEIGHT)),
           level="example", equal=lambda s: tuple(h @ W + bias for h in s)),
      Case("cosine", L.cosine_embedding_loss,
           lambda r: (_r(r, B, S, 6), _r(r, B, S, 6), am),
           level="token", seq_axes=(1,), equal=lambda s: s),
      Case("mlm_ce", L.mlm_cross_entropy_loss,
           lambda r: (_r(r, B, S, 7),
                      np.array([[1, -100, 2, 3, -100], [-100, 4, 5, 6, 6], [1, 1, 1, 1, 1]], np.int32),
                      dict(mask=MASK)),
           level="token", seq_axes=(1,)),
      Case("tinybert_hidden", L.tinybert_hidden_loss,
           lambda r: (_r(r, B, S, 4), _r(r, B, S, 6),
                      dict(am, projection_kernel=W, projection_bias=bias)),
           level="token", seq_axes=(1,), equal=lambda s: s @ W + bias),
      Case("tinybert_embedding", L.tinybert_embedding_loss,
           lambda r: (_r(r, B, S, 6), _r(r, B, S, 6), am),
           level="token", seq_axes=(1,), equal=lambda s: s),
      Case("tinybert_attention", L.tinybert_attention_loss,
           lambda r: (_scores(r, 2), _scores(r, 2), am),
           level="token", seq_axes=(2, 3), equal=lambda s: s),
      Case("mobilebert_feature_map", L.mobilebert_feature_map_loss,
           lambda r: (_r(r, B, S, 6), _r(r, B, S, 6), am),
           level="token", seq_axes=(1,), equal=lambda s: s),
      # repeating every feature twice keeps each token's mean and variance
      Case("mobilebert_mean", L.mobilebert_mean_loss,
           lambda r: (_r(r, B, S, 3), _r(r, B, S, 6), am),
           level="token", seq_axes=(1,), equal=lambda s: np.repeat(s, 2, axis=-1)),
      Case("mobilebert_variance", L.mobilebert_variance_loss,
           lambda r: (_r(r, B, S, 3), _r(r, B, S, 6), am),
           level="token", seq_axes=(1,), equal=lambda s: np.repeat(s, 2, axis=-1)),
      Case("attention_kl_probs", L.attention_kl_loss,
           lambda r: (_probs(r, 2), _probs(r, 2), am),
           level="token", seq_axes=(2, 3), equal=lambda s: s),
      Case("attention_kl_logits", L.attention_kl_loss,
           lambda r: (_scores(r, 2), _scores(r, 2), dict(am, from_logits=True)),
           level="token", seq_axes=(2, 3), equal=lambda s: s),
      Case("mobilebert_attention", L.mobilebert_attention_loss,
           lambda r: (_probs(r, 2), _probs(r, 2), am),
           level="token", seq_axes=(2, 3), equal=lambda s: s),
      Case("minilm_attention", L.minilm_attention_loss,
           lambda r: (_scores(r, 2), _scores(r, 2), dict(am, from_logits=True)),
           level="token", seq_axes=(2, 3), equal=lambda s: s),
      Case("minilm_value_relation", L.minilm_value_relation_loss,
           lambda r: (_r(r, B, 2, S, 3), _r(r, B, 2, S, 5), am),
           level="token", seq_axes=(2,), equal=lambda s: _widen_heads(s, 5)),
      Case("minilm_v2_relation", L.minilm_v2_relation_loss,
           lambda r: (_r(r, B, 2, S, 4), _r(r, B, 3, S, 4), dict(am, num_relation_heads=4)),
           level="token", seq_axes=(2,), equal=lambda s: _widen_relations(s, 4, 3, 4)),
      Case("minilm_v2", L.minilm_v2_loss,
           lambda r: (tuple(_r(r, B, 2, S, 4) for _ in range(3)),
                      tuple(_r(r, B, 4, S, 3) for _ in range(3)), dict(am, num_relation_heads=2)),
           level="token", seq_axes=(2,),
           equal=lambda s: tuple(_widen_relations(x, 2, 4, 3) for x in s)),
  ]
  return {c.name: c for c in cases}


CASES = _mk_cases()
NAMES = sorted(CASES)
ZERO_NAMES = [n for n in NAMES if CASES[n].equal is not None]
TOKEN_NAMES = [n for n in NAMES if CASES[n].level == "token"]


def _mask_kw(kw):
  return "attention_mask" if "attention_mask" in kw else ("mask" if "mask" in kw else None)


def _padded_noise(x, seq_axes, rng):
  """Noise placed only where a sequence axis indexes a padded token (MASK == 0)."""
  pad = np.zeros(x.shape, bool)
  for ax in seq_axes:
    shape = [1] * x.ndim
    shape[0], shape[ax] = B, S
    pad |= np.broadcast_to((MASK == 0).reshape(shape), x.shape)
  return x + np.where(pad, rng.normal(size=x.shape) * 3, 0).astype(np.float32)


# --------------------------------------------------------------------------- tests


def test_every_public_loss_is_covered():
  public = {n for n in L.__all__ if n.endswith("_loss") and n != "reduce_loss"}
  covered = {c.fn.__name__ for c in CASES.values()}
  assert public == covered, public ^ covered


@pytest.mark.parametrize("name", NAMES)
def test_unknown_reduction_rejected(name):
  c = CASES[name]
  s, t, kw = c.inputs()
  with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none'; got 'avg'"):
    c.fn(s, t, **kw, reduction="avg")


def _bf16_inputs(c):
  s, t, kw = c.inputs()
  cast = lambda x: x.astype(jnp.bfloat16) if x.dtype == np.float32 else x
  kw16 = {k: (cast(v) if k in ("projection_kernel", "projection_bias") else v) for k, v in kw.items()}
  return (s, t, kw), (jax.tree.map(cast, s), jax.tree.map(cast, t), kw16)


@pytest.mark.parametrize("name", NAMES)
def test_bf16_inputs_give_float32(name):
  # abstract evaluation only (no XLA compile): output and reductions are float32
  c = CASES[name]
  _, (s16, t16, kw16) = _bf16_inputs(c)
  static, dyn = _split(kw16)
  for r in ("mean", "none"):
    out = jax.eval_shape(lambda x, y, d: c.fn(x, y, **d, **static, reduction=r), s16, t16, dyn)
    assert out.dtype == jnp.float32, (r, out.dtype)
  g = jax.eval_shape(jax.grad(lambda x, y, d: c.fn(x, y, **d, **static)), s16, t16, dyn)
  assert all(leaf.dtype == jnp.bfloat16 for leaf in jax.tree.leaves(g))


@pytest.mark.parametrize("name", ["kd_kl_tokens", "tinybert_attention"])
def test_bf16_values_close_to_float32(name):
  c = CASES[name]
  (s, t, kw), (s16, t16, kw16) = _bf16_inputs(c)
  res = probe(c.fn, s16, t16, **kw16)
  assert res["mean"].dtype == jnp.float32
  assert all(np.all(np.isfinite(np.asarray(g, np.float32))) for g in jax.tree.leaves(res["grad"]))
  # bf16 keeps ~3 significant digits; the float32 computation on them stays close
  np.testing.assert_allclose(float(res["mean"]), float(call(c.fn, s, t, **kw)), rtol=0.05, atol=0.02)


@pytest.mark.parametrize("name", ZERO_NAMES)
def test_zero_when_student_equals_teacher(name):
  c = CASES[name]
  s, t, kw = c.inputs()
  t_eq = jax.tree.map(np.asarray, c.equal(s))
  out = call(c.fn, s, t_eq, **kw)
  assert abs(float(out)) < 1e-5, float(out)
  out_none = call(c.fn, s, t_eq, **kw, reduction="none")
  np.testing.assert_allclose(np.asarray(out_none), 0.0, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_nonnegative_on_random_inputs(name):
  c = CASES[name]
  for seed in range(3):
    s, t, kw = c.inputs(seed)
    out = np.asarray(call(c.fn, s, t, **kw, reduction="none"))
    assert np.all(out >= -1e-6), out
    assert np.any(out > 1e-4)  # and genuinely non-trivial


@pytest.mark.parametrize("name", NAMES)
def test_finite_with_fully_padded_rows(name):
  c = CASES[name]
  s, t, kw = c.inputs()
  out = probe(c.fn, s, t, **kw)
  val, g = out["mean"], out["grad"]
  assert np.isfinite(float(val)) and float(val) > 0
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(g))
  # fully padded batch: exactly zero, finite gradients that are exactly zero
  kw0 = dict(kw)
  key = _mask_kw(kw)
  if key is not None:
    kw0[key] = np.zeros_like(MASK)
  if "example_weight" in kw:
    kw0["example_weight"] = np.zeros_like(WEIGHT)
  out0 = probe(c.fn, s, t, **kw0)
  val0, g0 = out0["mean"], out0["grad"]
  assert float(val0) == 0.0
  assert all(np.all(np.asarray(x) == 0) for x in jax.tree.leaves(g0))


@pytest.mark.parametrize("name", NAMES)
def test_padding_and_dummy_examples_do_not_matter(name):
  c = CASES[name]
  s, t, kw = c.inputs()
  base = float(call(c.fn, s, t, **kw))
  rng = np.random.default_rng(5)
  if c.level == "token":
    s2 = jax.tree.map(lambda x: _padded_noise(x, c.seq_axes, rng), s)
    t2 = jax.tree.map(lambda x: _padded_noise(x, c.seq_axes, rng) if x.dtype == np.float32 else x, t)
  else:  # perturb the zero-weight example (index 2) only
    def bump(x):
      if x.dtype != np.float32:
        return x
      x = x.copy()
      x[2] = x[2] + rng.normal(size=x[2].shape).astype(np.float32) * 3
      return x
    s2, t2 = jax.tree.map(bump, s), jax.tree.map(bump, t)
  assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(s), jax.tree.leaves(s2)))
  np.testing.assert_allclose(float(call(c.fn, s2, t2, **kw)), base, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_reductions_are_consistent(name):
  c = CASES[name]
  s, t, kw = c.inputs()
  none = np.asarray(call(c.fn, s, t, **kw, reduction="none"))
  total = float(call(c.fn, s, t, **kw, reduction="sum"))
  mean = float(call(c.fn, s, t, **kw))
  assert none.shape == ((B, S) if c.level == "token" else (B,))
  if c.level == "token":
    weight = MASK.astype(np.float64)
    if c.name == "mlm_ce":
      weight = weight * (np.asarray(t) != -100)
  else:
    weight = WEIGHT.astype(np.float64)
    if c.name == "cross_entropy":
      weight = weight * (np.asarray(t) != -100)
  assert np.all(none[weight == 0] == 0)
  np.testing.assert_allclose(none.sum(), total, rtol=1e-5)
  np.testing.assert_allclose(mean, total / weight.sum(), rtol=1e-5)


# One case per distinct code path (thin wrappers such as tinybert_embedding_loss or
# mobilebert_attention_loss share theirs); each float64 compile costs ~0.5 s on CPU.
# (bf16 value checks for attention scores are in test_losses_relations.py.)
FD_NAMES = ["kd_kl_tokens", "mlm_ce", "pkd", "cosine", "tinybert_attention",
            "mobilebert_feature_map", "attention_kl_probs", "minilm_v2"]


@pytest.mark.parametrize("name", FD_NAMES)
def test_gradient_matches_finite_differences_float64(name):
  c = CASES[name]
  s, t, kw = c.inputs(seed=1)
  with jax.enable_x64(True):
    to64 = lambda x: np.asarray(x, np.float64) if np.asarray(x).dtype == np.float32 else np.asarray(x)
    s64, t64 = jax.tree.map(to64, s), jax.tree.map(to64, t)
    kw64 = {k: (to64(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    leaves, treedef = jax.tree.flatten(s64)
    flat = np.concatenate([x.ravel() for x in leaves])
    splits = np.cumsum([x.size for x in leaves])[:-1]

    def f(x):
      parts = jnp.split(x, splits)
      return c.fn(jax.tree.unflatten(treedef, [p.reshape(l.shape) for p, l in zip(parts, leaves)]),
                  t64, **kw64)

    eps = 1e-6
    dirs = np.random.default_rng(2).normal(size=(3, flat.size))

    @jax.jit
    def probe(x, v):
      g = jax.grad(f)(x)
      fd = jax.vmap(lambda d: (f(x + eps * d) - f(x - eps * d)) / (2 * eps))(v)
      return g, fd

    g, fd = probe(flat, dirs)
    assert g.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(fd), dirs @ np.asarray(g), rtol=1e-5, atol=1e-8)
