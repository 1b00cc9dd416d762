"""The train step as the loop builds it, for tests that drive it directly."""

from __future__ import annotations

from jaxdistill import methods
from jaxdistill.core.state import TeacherInputs
from jaxdistill.methods.base import RunInfo
from jaxdistill.train.step import (init_state, jit_train_step, make_mesh, make_optimizer, models_of,
                                   optimizer_labels)


def build_step(config, s_cfg, t_cfg=None, total_steps: int = 10):
  """(method, step(state, teacher_params, batch), init(student_params, aux=None), tx)."""
  teachers = (t_cfg,) if t_cfg is not None else ()
  method = methods.get(config)
  method.setup(RunInfo(s_cfg, teachers, total_steps))
  tx = make_optimizer(config, total_steps, optimizer_labels(config, method))
  jitted = jit_train_step(config, make_mesh(config), method, models_of(s_cfg, teachers), tx,
                          cached=False)

  def step(state, teacher_params, batch):
    params = (teacher_params,) if teacher_params is not None else None
    return jitted(state, TeacherInputs(params, None), batch)

  def init(student_params, aux=None):
    return init_state(student_params, method.init_params(config.seed) if aux is None else aux, tx)

  return method, step, init, tx
