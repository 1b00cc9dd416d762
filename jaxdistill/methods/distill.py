"""The composite method: a weighted sum of loss terms, chosen in the config alone.

    config.method = "kd"                 # any of this method's names; reports show it
    config.losses.hard_ce = 0.5          # weight 0 switches a term off
    config.losses.kd = 0.5
    config.loss_schedules.kd = "linear:0"  # optional: the weight moves to 0 over the run

Every registered term (methods/*.py, `@register_term`) can be weighted; each reads its own
hyperparameters from its config section (`from_config`). The method collects the union of
the internals its terms read, initialises each term's parameters from its own named RNG
stream ("init/term/<name>") and runs each term's `prepare` on its own stream
("prepare/<stream>"), so switching one term on or off never changes another's draws.

The names below are labels of the same method (fine-tuning is hard_ce alone); the term
families' modules add theirs (tinybert, minilm, ...), so a report says which recipe ran.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdistill.core import rng
from jaxdistill.core.outputs import Collect
from jaxdistill.methods.base import TERMS, Inputs, Method, StepOutputs, register
from jaxdistill.methods.schedules import Schedule


@register("distill", "finetune", "kd", "pkd", "logit_mse")
class Distill(Method):

  def __init__(self, config):
    super().__init__(config)
    self.terms = {}  # name -> (weight schedule, term), in config.losses order
    for name, weight in config.losses.items():
      if float(weight) == 0.0:
        continue
      if name not in TERMS:
        raise ValueError(f"losses.{name} names no registered loss term; registered: "
                         f"{', '.join(sorted(TERMS))}")
      spec = config.loss_schedules.get(name, "") if "loss_schedules" in config else ""
      self.terms[name] = (Schedule.parse(float(weight), spec, key=f"loss_schedules.{name}"),
                          TERMS[name].from_config(config))
    if not self.terms:
      raise ValueError("every loss weight is 0; set at least one, e.g. --config.losses.hard_ce=1")

  # -- what the step collects and how it uses the teacher --
  def collect(self) -> tuple[Collect, Collect | None]:
    s, t = Collect(), None
    for _, term in self.terms.values():
      s = s | term.student
      if term.teacher is not None:
        t = term.teacher if t is None else t | term.teacher
    return s, t

  def teacher_use(self) -> str:
    t = self.collect()[1]
    if t is None:
      return "none"
    return "logits" if t == Collect() else "internals"

  def reads_teacher_logits(self) -> bool:
    return any(t.teacher is not None and t.reads_teacher_logits for _, t in self.terms.values())

  # -- parameters and batch preparation, each on its own named stream --
  def init_params(self, seed: int) -> dict:
    aux = {}
    for name, (_, term) in sorted(self.terms.items()):
      params = term.init_params(rng.init_key(seed, "term", name), self.run.student_cfg,
                                self.run.teacher_cfg)
      if params:
        aux[name] = params
    return aux

  def teacher_cacheable(self) -> bool:
    # Its prepare_batch runs the terms' `prepare` (DistilBERT's and TinyBERT's MLM masking):
    # with any such term the teacher sees other inputs every step, so nothing is cached.
    return (self.teacher_use() in ("logits", "internals")
            and type(self).prepare_batch is Distill.prepare_batch
            and type(self).teacher_forward is Method.teacher_forward
            and not any(term.has_prepare for _, term in self.terms.values()))

  def prepare_batch(self, batch: dict, key) -> dict:
    for name, (_, term) in sorted(self.terms.items()):
      if term.has_prepare:
        batch = term.prepare(batch, rng.named(key, "prepare", term.stream or name),
                             self.run.student_cfg)
    return batch

  # -- the loss --
  def progress(self, step) -> jax.Array:
    return jnp.asarray(step, jnp.float32) / max(1, self.run.total_steps)

  def term_inputs(self, x: StepOutputs, name: str) -> Inputs:
    teachers = tuple(x.teachers)
    return Inputs(x.student, teachers[0] if teachers else None, x.batch,
                  x.trainable["aux"].get(name, {}), self.run.student_cfg, self.run.teacher_cfg,
                  x.trainable["student"], x.teacher_params[0] if x.teacher_params else None,
                  self.progress(x.step), teachers)

  def loss(self, x: StepOutputs) -> tuple[jax.Array, dict]:
    parts, total = {}, jnp.zeros((), jnp.float32)
    progress = self.progress(x.step)
    for name, (weight, term) in self.terms.items():
      value = term(self.term_inputs(x, name))
      parts[name] = value
      total = total + weight(progress) * value
    return total, parts
