"""The train state and the teacher's input to the train step.

`TrainState.trainable` is {"student": params, "aux": {owner: params}}: the aux tree holds the
method's own parameters (projections, LAD gates), keyed by the term or method that owns them.
Only `trainable` is differentiated; the teacher arrives as a separate, never-donated input.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax


class TrainState(NamedTuple):
  step: jax.Array       # int32 scalar: optimizer steps taken (micro-steps with grad_accum)
  trainable: dict       # {"student": params, "aux": {owner: params}}
  opt_state: Any        # optax.OptState


class TeacherInputs(NamedTuple):
  """What the step gets of the teacher(s): parameters to run, or logits cached once per run.

  params: one params tree per teacher (a tuple, usually of one), or None when no loss reads
    the teacher's internals.
  logits: [B, T, C] cached logits of this batch's rows for the T teachers, or None. When the
    method reads only logits and `train.cache_teacher_logits` is on, the loop computes them
    once over the train split (the teacher is deterministic) and passes only these.
  """
  params: Optional[tuple] = None
  logits: Optional[jax.Array] = None
