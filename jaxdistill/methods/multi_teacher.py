"""Multi-teacher KD: the student learns from the combined soft targets of several fine-tuned
teachers (as TextBrewer's MultiTeacherDistiller), written against the Method interface only.

    config.method = "multi_teacher_kd"
    config.teacher.source = ...                       # teacher 1 (may be fine-tuned first)
    config.multi_teacher.sources = ("path/to/t2",)    # further fine-tuned teachers
    config.multi_teacher.weights = (0.5, 0.5)         # () = equal; normalised to sum to 1
    config.losses.multi_kd = 1.0                      # with hard_ce as usual

    multi_kd = T^2 * KL( sum_i w_i softmax(z_i / T)  ||  softmax(z_s / T) )

at T = kd.temperature (its schedule too). combine="logits" averages the teachers' logits
first (w-weighted), then softens: the other common choice. Only logits are read, so the loop
caches every teacher's logits once per run (train.cache_teacher_logits) and the step runs no
teacher at all. Every teacher must share the student's tokenizer and label order (checked
by the loop for each, as for one teacher).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxdistill import losses
from jaxdistill.core.outputs import Collect
from jaxdistill.methods.base import Inputs, Term, register, register_term
from jaxdistill.methods.distill import Distill
from jaxdistill.methods.kd import classification_only
from jaxdistill.methods.schedules import Schedule

CONFIG = dict(sources=(), weights=(), combine="probs")
READS = ("kd",)  # multi_kd takes its temperature (and schedule) from the kd section
COMBINES = ("probs", "logits")


def combined_targets(teacher_logits: tuple, weights: tuple, temperature, combine: str) -> jax.Array:
  """[B, C] soft-target probabilities at `temperature` from T teachers' [B, C] logits."""
  w = jnp.asarray(weights, jnp.float32)
  z = jnp.stack([jnp.asarray(t, jnp.float32) for t in teacher_logits])  # [T, B, C]
  if combine == "logits":
    return jax.nn.softmax(jnp.tensordot(w, z, axes=1) / temperature, axis=-1)
  return jnp.tensordot(w, jax.nn.softmax(z / temperature, axis=-1), axes=1)


@register_term("multi_kd")
@dataclasses.dataclass(frozen=True)
class MultiKD(Term):
  temperature: Schedule = Schedule(2.0)
  weights: tuple = ()
  combine: str = "probs"
  doc = "multi-teacher KD: KL to the teachers' weighted soft targets (multi_teacher.*)"
  teacher = Collect()

  @classmethod
  def from_config(cls, config):
    if "multi_teacher" not in config:
      raise ValueError("losses.multi_kd needs method=multi_teacher_kd (and multi_teacher.sources)")
    m = config.multi_teacher
    if m.combine not in COMBINES:
      raise ValueError(f"multi_teacher.combine={m.combine!r}; use one of {', '.join(COMBINES)}")
    return cls(Schedule.parse(config.kd.temperature, config.kd.temperature_schedule,
                              key="kd.temperature_schedule"),
               tuple(float(w) for w in m.weights), str(m.combine))

  def normalised_weights(self, n: int) -> tuple:
    w = self.weights or (1.0,) * n
    if len(w) != n or min(w) < 0 or sum(w) <= 0:
      raise ValueError(f"multi_teacher.weights={self.weights} must be {n} non-negative numbers "
                       f"(one per teacher) with a positive sum, or () for equal weights")
    return tuple(x / sum(w) for x in w)

  def __call__(self, x: Inputs) -> jax.Array:
    classification_only("multi_kd", x)
    if getattr(x.student_cfg, "head", "sequence") != "sequence":
      raise ValueError("multi_kd combines sentence-level soft targets; for token or span tasks "
                       "use losses.kd with one teacher")
    t = self.temperature(x.progress)
    logits = tuple(o.logits for o in x.teachers)
    target = combined_targets(logits, self.normalised_weights(len(logits)), t, self.combine)
    # KL(p || q) = sum p log p - sum p log q, computed on the soft targets directly.
    log_q = jax.nn.log_softmax(jnp.asarray(x.student.logits, jnp.float32) / t, axis=-1)
    per_example = jnp.sum(target * (jnp.log(jnp.maximum(target, 1e-30)) - log_q), axis=-1)
    return losses.reduce_loss(per_example * t * t, example_weight=x.batch["example_weight"])


@register("multi_teacher_kd")
class MultiTeacherKD(Distill):
  """The composite method with every teacher of multi_teacher.sources loaded beside
  teacher.source; its terms see them all in `Inputs.teachers`."""

  def teacher_sources(self, source: str) -> tuple[str, ...]:
    sources = tuple(s for s in (source, *self.config.multi_teacher.sources) if s)
    if len(sources) < 2:
      raise ValueError("multi_teacher_kd needs at least two teachers: teacher.source and "
                       "multi_teacher.sources (fine-tuned checkpoints)")
    return sources
