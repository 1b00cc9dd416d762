"""The train state and the teacher's input to the train step.

`TrainState.trainable` is {"student": params, "aux": {owner: params}}: the aux tree holds the
method's own parameters (projections, LAD gates), keyed by the term or method that owns them.
Only `trainable` is differentiated; the teacher arrives as a separate, never-donated input.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp


class TrainState(NamedTuple):
  step: jax.Array       # int32 scalar: optimizer steps taken (micro-steps with grad_accum)
  trainable: dict       # {"student": params, "aux": {owner: params}}
  opt_state: Any        # optax.OptState


class TeacherInputs(NamedTuple):
  """What the step gets of the teacher(s): parameters to run, or their outputs cached once.

  params: one params tree per teacher (a tuple, usually of one), or None when no loss reads
    the teacher or its outputs are cached.
  outputs: one `BertOutput` per teacher holding this batch's rows of the cached outputs
    (jaxdistill/train/teacher_cache.py), or None. When the teacher's inputs are fixed
    (`Method.teacher_cacheable()`) and `train.cache_teacher` is on, the loop computes the
    outputs the losses read once over the train split and passes only these; a leaf the
    losses never read is an `Unread` placeholder. Cached logits alone (KD) are the case
    "Collect() and only `logits` read".
  """
  params: Optional[tuple] = None
  outputs: Optional[tuple] = None


@dataclasses.dataclass(frozen=True)
class Unread:
  """A cached teacher output no loss reads: only its shape and dtype travel (a pytree node
  with no children, so jit sees static metadata and no array). `materialize` turns it into
  zeros of that shape, which nothing reads, so XLA drops them."""
  shape: tuple
  dtype: str

  def zeros(self) -> jax.Array:
    return jnp.zeros(self.shape, self.dtype)


jax.tree_util.register_pytree_node(Unread, lambda u: ((), (u.shape, u.dtype)),
                                   lambda aux, _: Unread(*aux))


def materialize(tree):
  """`tree` (a cached BertOutput) with every `Unread` leaf replaced by zeros of its shape."""
  return jax.tree.map(lambda x: x.zeros() if isinstance(x, Unread) else x, tree,
                      is_leaf=lambda x: isinstance(x, Unread))
