"""Named RNG streams: every random draw in a run has a stable identity.

A draw's key is a function of (seed, step, purpose) only, never of which other terms or
features are switched on: the purpose is a name ("init/pkd", "prepare/mlm_mask",
"theseus/mask"), folded in as its CRC-32. Before streams were named, a term's key came from
its index among the active terms, so turning `hard_ce` off changed the PKD projection's
initial values and DistilBERT's MLM masks.

The dropout stream is the step key itself, `fold_in(key(seed), step)`: the models fold their
layer indices (0..L) and the head (10_000) into it, as they always have, so dropout draws are
unchanged by the naming. A CRC-32 of a name collides with those small integers with
probability ~1e-5 per name, and the names in use are checked against them in the tests.
"""

from __future__ import annotations

import zlib

import jax


def tag(name: str) -> int:
  """The 32-bit fold_in datum of a stream name."""
  return zlib.crc32(name.encode("utf-8")) & 0xFFFFFFFF


def named(key: jax.Array, *names: str) -> jax.Array:
  """The stream `names` ("init", "pkd" -> "init/pkd") derived from `key`."""
  return jax.random.fold_in(key, tag("/".join(names)))


def root(seed: int) -> jax.Array:
  return jax.random.key(seed)


def step_key(seed: int, step) -> jax.Array:
  """The step's key: the dropout stream, and the parent of the step's named streams."""
  return jax.random.fold_in(root(seed), step)


def init_key(seed: int, *names: str) -> jax.Array:
  """A parameter-initialisation stream, e.g. init_key(seed, "term", "pkd")."""
  return named(root(seed), "init", *names)
