"""Orbax checkpoints: `ckpt/` for resuming (latest N, async) and `best/` (best dev metric).

Only the trainable state is saved: the teacher is an input of the run, never saved again.
A resumed run restores step, params and optimizer state; data order and dropout keys are
functions of (seed, step), so it continues exactly where the interrupted run was.

A checkpoint is trusted only when it is verifiably whole. Orbax writes each step into a
temporary directory and renames it when done, so a save cut off by SIGKILL leaves a
`*.orbax-checkpoint-tmp-*` directory that is never read (and removed at the next start).
That rename is no protection against a file damaged later or a directory copied in part,
and a tensorstore chunk with garbage in it can restore without any error. So every save
also records a checksum of the state's bits (computed on device, `state_checksum`) in the
step's metadata, and a restore checks: the commit marker orbax writes last
(`commit_success.txt`) and its commit timestamp, that the arrays read, the checksum, and
the step number. A checkpoint failing any of these is moved to `<workdir>/ckpt_corrupt/`
with a warning and the previous one is tried. A checkpoint of a different model or
optimizer (shapes that do not match this config) is not corruption: that is an error
telling the user to use the config that wrote it or a new workdir.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from jaxdistill import distributed
from jaxdistill.train.step import TrainState

log = logging.getLogger(__name__)

COMMIT_MARKER = "commit_success.txt"  # orbax writes it after every file of the step
STEP_METADATA = "_CHECKPOINT_METADATA"
CHECKSUM_KEY = "jaxdistill_checksum"


class CorruptCheckpoint(Exception):
  """A checkpoint step that cannot be trusted (incomplete, unreadable or altered)."""


def _abstract(tree):
  return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def _as_uint32(x: jax.Array) -> jax.Array:
  """The bits of each element as uint32 (bool/8/16-bit types widened, 32-bit reinterpreted)."""
  if x.dtype == jnp.bool_:
    return x.astype(jnp.uint32)
  size = jnp.dtype(x.dtype).itemsize
  if size == 4:
    return jax.lax.bitcast_convert_type(x, jnp.uint32)
  if size in (1, 2):
    bits = jax.lax.bitcast_convert_type(x, {1: jnp.uint8, 2: jnp.uint16}[size])
    return bits.astype(jnp.uint32)
  raise TypeError(f"cannot checksum dtype {x.dtype}")


@jax.jit
def _leaf_sums(leaves):
  # Two position-weighted sums of the bits per leaf, mod 2^32. The weights are odd, so any
  # change of a single element changes both sums; integer sums are exact in any reduction
  # order, so the checksum is the same on any mesh and any number of devices.
  out = []
  for x in leaves:
    bits = _as_uint32(x).ravel()
    pos = jnp.arange(bits.size, dtype=jnp.uint32) * np.uint32(2) + np.uint32(1)
    out.append(jnp.stack([jnp.sum(bits * (pos * np.uint32(0x9E3779B1)), dtype=jnp.uint32),
                          jnp.sum((bits ^ (bits >> 13)) * (pos * np.uint32(0x85EBCA77)),
                                  dtype=jnp.uint32)]))
  return jnp.stack(out) if out else jnp.zeros((0, 2), jnp.uint32)


def state_checksum(tree) -> list[list[int]]:
  """A checksum of every leaf's bits: [[sum1, sum2], ...] in leaf order (JSON-ready)."""
  return np.asarray(jax.device_get(_leaf_sums(jax.tree.leaves(tree)))).astype(int).tolist()


def _signature(tree) -> list[tuple]:
  """Sorted (shape, dtype) of every array: what a checkpoint of the same config must have."""
  return sorted((tuple(int(d) for d in x.shape), str(np.dtype(x.dtype))) for x in jax.tree.leaves(tree))


def _first_line(e: BaseException) -> str:
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0][:200] if text else ''}"


class Checkpoints:

  def __init__(self, workdir: Path, *, keep: int, primary_metric: str):
    self.workdir = Path(workdir).absolute()
    self.resume = ocp.CheckpointManager(
        self.workdir / "ckpt",
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True,
                                             cleanup_tmp_directories=True))
    self.best = ocp.CheckpointManager(
        self.workdir / "best",
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda m: m[primary_metric], best_mode="max",
            enable_async_checkpointing=False, cleanup_tmp_directories=True))

  def latest_step(self) -> Optional[int]:
    return self.resume.latest_step()

  def save(self, state: TrainState, *, force: bool = False) -> None:
    step = int(state.step)
    if self.resume.latest_step() == step:
      return
    tree = state._asdict()
    self.resume.save(step, args=ocp.args.StandardSave(tree), force=force,
                     custom_metadata={CHECKSUM_KEY: state_checksum(tree)})

  def wait(self) -> None:
    """Blocks until the asynchronous save in flight (if any) is on disk."""
    self.resume.wait_until_finished()

  # ---- Restoring, with the checks -----------------------------------------------------------
  def _checked_restore(self, manager: ocp.CheckpointManager, step: int, template: dict,
                       *, has_step: bool) -> dict:
    step_dir = Path(manager.directory) / str(step)
    if not (step_dir / COMMIT_MARKER).is_file():
      raise CorruptCheckpoint(f"no {COMMIT_MARKER} (the save never finished)")
    try:
      meta = json.loads((step_dir / STEP_METADATA).read_text())
    except (OSError, ValueError) as e:
      raise CorruptCheckpoint(f"unreadable {STEP_METADATA} ({_first_line(e)})") from None
    if not isinstance(meta, dict) or not meta.get("commit_timestamp_nsecs"):
      raise CorruptCheckpoint(f"{STEP_METADATA} has no commit timestamp (the save never finished)")
    handler = ocp.StandardCheckpointHandler()
    try:
      on_disk = handler.metadata(epath.Path(step_dir / "default"))
    except Exception as e:  # noqa: BLE001 - any failure to read it means the step is damaged
      raise CorruptCheckpoint(f"unreadable array metadata ({_first_line(e)})") from None
    finally:
      handler.close()
    if on_disk is None or not jax.tree.leaves(on_disk):
      raise CorruptCheckpoint("unreadable array metadata")
    if _signature(on_disk) != _signature(template):
      raise ValueError(f"{manager.directory} holds checkpoints of a different model or optimizer "
                       "(array shapes differ from this config's); rerun with the config that wrote "
                       "them, or pass a new --workdir")
    try:
      restored = manager.restore(step, args=ocp.args.StandardRestore(_abstract(template)))
    except Exception as e:  # noqa: BLE001 - tensorstore/orbax raise many types for bad files
      raise CorruptCheckpoint(f"arrays unreadable ({_first_line(e)})") from None
    expected = (meta.get("custom_metadata") or {}).get(CHECKSUM_KEY)
    if expected is not None and state_checksum(restored) != expected:
      raise CorruptCheckpoint("checksum mismatch (the arrays on disk were altered)")
    if has_step and int(restored["step"]) != step:
      raise CorruptCheckpoint(f"it holds step {int(restored['step'])}")
    return restored

  def _set_aside(self, manager: ocp.CheckpointManager, step: int) -> Path:
    """Moves a bad step out of the manager's directory (kept for inspection, never reused)."""
    src = Path(manager.directory) / str(step)
    dst = self.workdir / f"{Path(manager.directory).name}_corrupt" / str(step)
    n = 1
    while dst.exists():
      dst, n = dst.with_name(f"{step}.{n}"), n + 1
    if distributed.is_main():
      dst.parent.mkdir(parents=True, exist_ok=True)
      shutil.move(str(src), str(dst))
    distributed.sync(f"set aside {src}")
    manager.reload()
    return dst

  def _restore_newest_good(self, manager: ocp.CheckpointManager, template: dict) -> Optional[dict]:
    for step in sorted(manager.all_steps(), reverse=True):
      try:
        return self._checked_restore(manager, step, template, has_step=True)
      except CorruptCheckpoint as e:
        dst = self._set_aside(manager, step)
        log.warning("checkpoint step %d in %s is damaged (%s); moved it to %s and using the "
                    "previous one", step, manager.directory, e, dst)
    return None

  def restore_latest(self, template: TrainState) -> Optional[TrainState]:
    """The newest good checkpoint restored into `template`'s shardings, or None if there is
    none (damaged ones are moved aside with a warning)."""
    had = bool(self.resume.all_steps())
    restored = self._restore_newest_good(self.resume, template._asdict())
    if restored is None:
      if had:
        log.warning("no readable checkpoint in %s; starting from step 0", self.resume.directory)
      return None
    return TrainState(**restored)

  def restore(self, template: TrainState) -> TrainState:
    state = self.restore_latest(template)
    if state is None:
      raise FileNotFoundError(f"no readable checkpoint in {self.resume.directory}")
    return state

  # ---- Best by dev metric -------------------------------------------------------------------
  def save_best(self, step: int, student_params: dict, metrics: dict[str, float]) -> bool:
    """Saves if `metrics` beat the best so far; returns whether it did."""
    if step in self.best.all_steps():
      return False
    return self.best.save(step, args=ocp.args.StandardSave(student_params), metrics=metrics,
                          custom_metadata={CHECKSUM_KEY: state_checksum(student_params)})

  def best_params(self, template: dict) -> Optional[dict]:
    """The best-by-dev params; None (use the last params) if there is none or it is damaged."""
    step = self.best.best_step()
    if step is None:
      return None
    try:
      return self._checked_restore(self.best, step, template, has_step=False)
    except CorruptCheckpoint as e:
      dst = self._set_aside(self.best, step)
      log.warning("the best checkpoint (step %d) is damaged (%s); moved it to %s and using the "
                  "final params instead", step, e, dst)
      return None

  def close(self) -> None:
    self.resume.wait_until_finished()
    self.resume.close()
    self.best.close()
