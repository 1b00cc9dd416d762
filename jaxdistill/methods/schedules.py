"""Schedules for loss weights and temperatures: constant, linear, cosine (as TextBrewer's).

A schedule is written as a string next to the value it moves:

    --config.loss_schedules.kd=linear:0      # the kd weight goes from losses.kd to 0
    --config.kd.temperature_schedule=cosine:1  # T goes from kd.temperature to 1

"" (or "constant") keeps the value. "linear:END" moves it linearly from its configured value
at the first step to END at the last; "cosine:END" along a half cosine (flat at both ends).
Progress is optimizer steps taken over the run's total, so a resumed run continues the same
curve. A constant schedule returns the Python float itself, so a run without schedules
computes exactly what it did before schedules existed.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

from jaxdistill.core.errors import ConfigError

KINDS = ("constant", "linear", "cosine")


@dataclasses.dataclass(frozen=True)
class Schedule:
  start: float
  kind: str = "constant"
  end: float = 0.0

  @classmethod
  def parse(cls, start: float, spec: str, *, key: str) -> "Schedule":
    spec = (spec or "").strip()
    if spec in ("", "constant"):
      return cls(float(start))
    kind, _, end = spec.partition(":")
    if kind not in KINDS or not end:
      raise ConfigError(f"{key}={spec!r}: use constant, linear:END or cosine:END (e.g. linear:0)")
    try:
      return cls(float(start), kind, float(end))
    except ValueError:
      raise ConfigError(f"{key}={spec!r}: END must be a number, e.g. {kind}:0") from None

  def __call__(self, progress):
    """The value at `progress` in [0, 1] (a traced scalar inside the step)."""
    if self.kind == "constant":
      return self.start
    p = jnp.clip(jnp.asarray(progress, jnp.float32), 0.0, 1.0)
    if self.kind == "linear":
      frac = p
    else:
      frac = 0.5 * (1.0 - jnp.cos(math.pi * p))
    return self.start + (self.end - self.start) * frac
