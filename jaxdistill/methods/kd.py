"""Output-layer terms: the labels (`hard_ce`), Hinton KD (`kd`, `soft_ce`) and logit
matching (`logit_mse`: Bucilua et al. 2006; Tang et al. 2019).

    kd       = T^2 * KL(softmax(z_t / T) || softmax(z_s / T))   (Hinton et al. 2015)
    soft_ce  = T^2 * CE(softmax(z_t / T), softmax(z_s / T))     (same gradients as kd)
    logit_mse = mean_c (z_s - z_t)^2

kd and soft_ce take `kd.temperature` (with `kd.temperature_schedule`, methods/schedules.py)
and `kd.t2_scaling`.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from jaxdistill import losses
from jaxdistill.core.outputs import Collect
from jaxdistill.methods.base import Inputs, Term, register_term
from jaxdistill.methods.schedules import Schedule

CONFIG = dict(temperature=2.0, t2_scaling=True, temperature_schedule="")


def _weights(x: Inputs):
  return x.batch["example_weight"]


def classification_only(name: str, x: Inputs) -> None:
  if x.student_cfg.problem_type == "regression":
    raise ValueError(f"loss term {name!r} needs class logits but the task is regression; "
                     "use losses.logit_mse instead")


@register_term("hard_ce")
@dataclasses.dataclass(frozen=True)
class HardCE(Term):
  doc = "cross-entropy to the labels (MSE for regression)"

  def __call__(self, x: Inputs) -> jax.Array:
    # Unlabelled rows (label -1 / NaN, e.g. augmented data) carry no hard loss.
    logits, labels = x.student.logits, x.batch["labels"]
    if x.student_cfg.problem_type == "regression":
      known = jnp.isfinite(labels)
      return losses.regression_mse_loss(logits[:, 0], jnp.where(known, labels, 0.0),
                                        example_weight=_weights(x) * known)
    known = labels >= 0
    return losses.cross_entropy_loss(logits, jnp.maximum(labels, 0),
                                     example_weight=_weights(x) * known)


@dataclasses.dataclass(frozen=True)
class _SoftTargets(Term):
  temperature: Schedule = Schedule(2.0)
  t2_scaling: bool = True
  teacher = Collect()

  @classmethod
  def from_config(cls, config):
    return cls(Schedule.parse(config.kd.temperature, config.kd.temperature_schedule,
                              key="kd.temperature_schedule"), bool(config.kd.t2_scaling))


@register_term("kd")
@dataclasses.dataclass(frozen=True)
class KD(_SoftTargets):
  doc = "Hinton soft-target KL at temperature kd.temperature"

  def __call__(self, x: Inputs) -> jax.Array:
    classification_only("kd", x)
    return losses.kd_kl_loss(x.student.logits, x.teacher.logits, self.temperature(x.progress),
                             scale_by_t2=self.t2_scaling, example_weight=_weights(x))


@register_term("soft_ce")
@dataclasses.dataclass(frozen=True)
class SoftCE(_SoftTargets):
  doc = "soft-target cross-entropy form of kd"

  def __call__(self, x: Inputs) -> jax.Array:
    classification_only("soft_ce", x)
    return losses.soft_cross_entropy_loss(x.student.logits, x.teacher.logits,
                                          self.temperature(x.progress),
                                          scale_by_t2=self.t2_scaling, example_weight=_weights(x))


@register_term("logit_mse")
@dataclasses.dataclass(frozen=True)
class LogitMSE(Term):
  doc = "MSE between logits (Bucilua; Tang et al.)"
  teacher = Collect()

  def __call__(self, x: Inputs) -> jax.Array:
    return losses.logit_mse_loss(x.student.logits, x.teacher.logits, example_weight=_weights(x))
