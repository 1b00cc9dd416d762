"""Orbax checkpoints: `ckpt/` for resuming (latest N, async) and `best/` (best dev metric).

Only the trainable state is saved: the teacher is an input of the run, never saved again.
A resumed run restores step, params and optimizer state; data order and dropout keys are
functions of (seed, step), so it continues exactly where the interrupted run was.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import jax
import orbax.checkpoint as ocp

from jaxdistill.train.step import TrainState

log = logging.getLogger(__name__)


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpoints:

  def __init__(self, workdir: Path, *, keep: int, primary_metric: str):
    self.resume = ocp.CheckpointManager(
        Path(workdir).absolute() / "ckpt",
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True))
    self.best = ocp.CheckpointManager(
        Path(workdir).absolute() / "best",
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda m: m[primary_metric], best_mode="max",
            enable_async_checkpointing=False))

  def latest_step(self) -> Optional[int]:
    return self.resume.latest_step()

  def save(self, state: TrainState, *, force: bool = False) -> None:
    step = int(state.step)
    if self.resume.latest_step() == step:
      return
    self.resume.save(step, args=ocp.args.StandardSave(state._asdict()), force=force)

  def restore(self, template: TrainState) -> TrainState:
    step = self.resume.latest_step()
    restored = self.resume.restore(step, args=ocp.args.StandardRestore(_abstract(template._asdict())))
    return TrainState(**restored)

  def save_best(self, step: int, student_params: dict, metrics: dict[str, float]) -> bool:
    """Saves if `metrics` beat the best so far; returns whether it did."""
    if step in self.best.all_steps():
      return False
    return self.best.save(step, args=ocp.args.StandardSave(student_params), metrics=metrics)

  def best_params(self, template: dict) -> Optional[dict]:
    step = self.best.best_step()
    if step is None:
      return None
    return self.best.restore(step, args=ocp.args.StandardRestore(_abstract(template)))

  def close(self) -> None:
    self.resume.wait_until_finished()
    self.resume.close()
    self.best.close()
