"""A method outside the package: confidence-weighted KD, each example's soft-target loss
weighted by the teacher's confidence (its top class probability).

  python -m jaxdistill.train --config configs/kd.py:tiny --workdir /tmp/my_method \
      --config.method_module=examples/my_method.py --config.method=my_method \
      --config.losses.kd=0 --config.losses.cw_kd=1 --config.my_method.temperature=3
"""

import dataclasses

import jax
import jax.numpy as jnp

from jaxdistill import losses
from jaxdistill.core.outputs import Collect
from jaxdistill.methods.base import Term, register, register_term
from jaxdistill.methods.distill import Distill

CONFIG = dict(temperature=2.0)  # becomes config.my_method (the file's name)


@register_term("cw_kd")
@dataclasses.dataclass(frozen=True)
class ConfidenceWeightedKD(Term):
  temperature: float = 2.0
  teacher = Collect()  # reads only the teacher's logits: the loop caches them once

  @classmethod
  def from_config(cls, config):
    return cls(float(config.my_method.temperature))

  def __call__(self, x):
    confidence = jnp.max(jax.nn.softmax(x.teacher.logits, axis=-1), axis=-1)
    return losses.kd_kl_loss(x.student.logits, x.teacher.logits, self.temperature,
                             example_weight=x.batch["example_weight"] * confidence)


@register("my_method")
class MyMethod(Distill):
  """The composite (weighted terms); override any hook of methods/base.py:Method here."""
