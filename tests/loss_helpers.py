"""Helpers shared by the loss tests: cached jit calls and random inputs with padding."""

import jax
import numpy as np

_JIT = {}


def call(fn, *args, **kwargs):
  """fn(*args, **kwargs) under a jit cached per (fn, static kwargs): far cheaper than
  op-by-op dispatch on CPU.  Array kwargs are traced, the rest are static."""
  dyn = {k: v for k, v in kwargs.items() if isinstance(v, (np.ndarray, jax.Array))}
  static = {k: (tuple(map(tuple, v)) if isinstance(v, list) else v)
            for k, v in kwargs.items() if k not in dyn}
  key = (fn, tuple(sorted(static.items())), tuple(sorted(dyn)))
  if key not in _JIT:
    _JIT[key] = jax.jit(lambda a, d, _s=static: fn(*a, **d, **_s))
  return _JIT[key](args, dyn)


def rand(rng, *shape, scale=1.0):
  return (rng.normal(size=shape) * scale).astype(np.float32)


def lengths_mask(lengths, s):
  return np.array([[1] * n + [0] * (s - n) for n in lengths], np.int32)
