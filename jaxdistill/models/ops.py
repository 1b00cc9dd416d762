"""Element-wise building blocks of the encoders: dropout with cheap Threefry bits, exact GELU
with a custom JVP, LayerNorm with a fused custom VJP (models/bert.py's docstring says why
each is written out by hand; docs/performance.md has the measurements).
"""

from __future__ import annotations

import functools
import math
from typing import Optional

import jax
import jax.numpy as jnp

Array = jax.Array


_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(k1: Array, k2: Array, x1: Array, x2: Array) -> tuple[Array, Array]:
  """Threefry-2x32, 20 rounds (Salmon et al. 2011), as jax.random computes it: the same key
  schedule, rotations and round count, on uint32 counters (x1, x2); elementwise, so XLA fuses
  it into one loop. For key data (k1, k2) and counters (0, i), `y1 ^ y2` equals
  `jax.random.bits(key, (n,), jnp.uint32)[i]` (tests/test_bench.py checks it)."""
  def rotl(v, r):
    return (v << jnp.uint32(r)) | (v >> jnp.uint32(32 - r))

  ks = (k1, k2, k1 ^ k2 ^ jnp.uint32(0x1BD11BDA))
  a, b = x1 + ks[0], x2 + ks[1]
  for i in range(5):
    for r in _THREEFRY_ROTATIONS[i % 2]:
      a = a + b
      b = rotl(b, r) ^ a
    a = a + ks[(i + 1) % 3]
    b = b + ks[(i + 2) % 3] + jnp.uint32(i + 1)
  return a, b


def random_uint16(key: Array, shape: tuple[int, ...]) -> Array:
  """Uniform 16-bit integers of `shape`: four per Threefry block (its two 32-bit words split
  in halves). Keys of another PRNG implementation go through jax.random.bits."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if str(jax.random.key_impl(key)) != "threefry2x32":
      return jax.random.bits(key, shape, jnp.uint16)
    data = jax.random.key_data(key)
  elif key.shape == (2,) and key.dtype == jnp.uint32:  # a legacy raw PRNGKey
    data = key
  else:
    return jax.random.bits(key, shape, jnp.uint16)
  n = math.prod(shape)
  blocks = -(-n // 4)
  counter = jax.lax.iota(jnp.uint32, blocks)
  y1, y2 = threefry2x32(data[0], data[1], jnp.zeros_like(counter), counter)
  halves = jnp.stack([y1, y1 >> 16, y2, y2 >> 16]).astype(jnp.uint16)  # [4, blocks]
  return halves.reshape(-1)[:n].reshape(shape)


def dropout(x: Array, rate: float, key: Optional[Array]) -> Array:
  """Inverted dropout from 16 random bits per element; identity when key is None."""
  if key is None or rate <= 0.0:
    return x
  threshold = min(int(round(rate * 65536)), 65535)
  keep = random_uint16(key, x.shape) >= jnp.uint16(threshold)
  scale = 65536.0 / (65536 - threshold)  # exact for the quantised rate, so E[out] = x
  return jnp.where(keep, x * jnp.asarray(scale, x.dtype), jnp.zeros((), x.dtype))


def _fold(key: Optional[Array], i: int) -> Optional[Array]:
  return None if key is None else jax.random.fold_in(key, i)


_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@jax.custom_jvp
def gelu_exact(x: Array) -> Array:
  """x * Phi(x), Phi the standard normal CDF (BERT's "gelu"), in x's dtype."""
  return x * (0.5 + 0.5 * jax.lax.erf(x * jnp.asarray(_SQRT_HALF, x.dtype)))


@gelu_exact.defjvp
def _gelu_exact_jvp(primals, tangents):
  # d/dx x Phi(x) = Phi(x) + x phi(x). Written out, the forward pass computes erf and exp once
  # and keeps one array for the backward; autodiff of jax.nn.gelu recomputes more (erfc, and
  # its derivative's exp, in separate passes): ~2x the elementwise time on CPU.
  (x,), (t,) = primals, tangents
  cdf = 0.5 + 0.5 * jax.lax.erf(x * jnp.asarray(_SQRT_HALF, x.dtype))
  pdf = jnp.exp(-0.5 * x * x) * jnp.asarray(_INV_SQRT_2PI, x.dtype)
  return x * cdf, t * (cdf + x * pdf)


def activation(name: str):
  return {
      "gelu": gelu_exact,
      "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
      "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
      "relu": jax.nn.relu,
      "silu": jax.nn.silu,
      "swish": jax.nn.silu,
      "tanh": jnp.tanh,
  }[name]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: Array, scale: Array, bias: Array, eps: float) -> Array:
  """LayerNorm over the last axis with float32 statistics; the output has x's dtype."""
  return _layer_norm_fwd(x, scale, bias, eps)[0]


def _layer_norm_fwd(x, scale, bias, eps):
  x32 = x.astype(jnp.float32)
  centred = x32 - jnp.mean(x32, axis=-1, keepdims=True)
  rstd = jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + eps)
  normed = centred * rstd
  y = normed * scale.astype(jnp.float32) + bias.astype(jnp.float32)
  return y.astype(x.dtype), (normed, rstd, scale, bias)


def _layer_norm_bwd(eps, res, g):
  # The textbook fused backward: dx = rstd * (g' - mean(g') - x_hat mean(g' x_hat)), g' = g * scale.
  del eps
  normed, rstd, scale, bias = res
  x_dtype = g.dtype  # the output's dtype, which is x's
  g = g.astype(jnp.float32)
  gn = g * scale.astype(jnp.float32)
  dx = rstd * (gn - jnp.mean(gn, axis=-1, keepdims=True)
               - normed * jnp.mean(gn * normed, axis=-1, keepdims=True))
  batch_axes = tuple(range(g.ndim - 1))
  return (dx.astype(x_dtype), jnp.sum(g * normed, axis=batch_axes).astype(scale.dtype),
          jnp.sum(g, axis=batch_axes).astype(bias.dtype))


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)
