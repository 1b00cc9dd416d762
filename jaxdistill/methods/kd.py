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


def task_view(logits: jax.Array, x: Inputs):
  """(logits, mask) as rows of class scores for the student's head, so one formula serves
  every task: a sequence head's [B, C] as they are; a token head's [B, S, C] with the mask
  of the labelled positions (each word's first wordpiece: labels >= 0); a span head's
  [B, S, 2] as [B, 2, S] (start and end are each a distribution over positions, padding
  excluded), no mask. hard_ce is then the mean over labelled tokens, or (CE_start + CE_end) / 2
  as BertForQuestionAnswering computes it; kd compares the same rows of the teacher."""
  head = getattr(x.student_cfg, "head", "sequence")
  if head == "token":
    return logits, x.batch["labels"] >= 0
  if head == "span":
    z = jnp.swapaxes(logits, 1, 2)
    return jnp.where(x.batch["attention_mask"][:, None, :] > 0, z, losses.NEG_LARGE), None
  return logits, None


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
    if getattr(x.student_cfg, "head", "sequence") != "sequence":
      z, mask = task_view(logits, x)
      return losses.cross_entropy_loss(z, jnp.maximum(labels, 0), mask=mask,
                                       example_weight=_weights(x))
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
    (zs, mask), (zt, _) = task_view(x.student.logits, x), task_view(x.teacher.logits, x)
    return losses.kd_kl_loss(zs, zt, self.temperature(x.progress), mask=mask,
                             scale_by_t2=self.t2_scaling, example_weight=_weights(x))


@register_term("soft_ce")
@dataclasses.dataclass(frozen=True)
class SoftCE(_SoftTargets):
  doc = "soft-target cross-entropy form of kd"

  def __call__(self, x: Inputs) -> jax.Array:
    classification_only("soft_ce", x)
    (zs, mask), (zt, _) = task_view(x.student.logits, x), task_view(x.teacher.logits, x)
    return losses.soft_cross_entropy_loss(zs, zt, self.temperature(x.progress), mask=mask,
                                          scale_by_t2=self.t2_scaling, example_weight=_weights(x))


@register_term("logit_mse")
@dataclasses.dataclass(frozen=True)
class LogitMSE(Term):
  doc = "MSE between logits (Bucilua; Tang et al.)"
  teacher = Collect()

  def __call__(self, x: Inputs) -> jax.Array:
    if getattr(x.student_cfg, "head", "sequence") == "span":  # raw logits, real positions only
      m = x.batch["attention_mask"] > 0
      return losses.logit_mse_loss(x.student.logits, x.teacher.logits, mask=m,
                                   example_weight=_weights(x))
    zs, mask = task_view(x.student.logits, x)
    return losses.logit_mse_loss(zs, x.teacher.logits, mask=mask, example_weight=_weights(x))
