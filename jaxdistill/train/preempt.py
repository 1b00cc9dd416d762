"""Stopping a run safely: preemption (SIGTERM) and non-finite steps.

Preemption. Clusters announce an eviction with SIGTERM and send SIGKILL a grace period
later. While the train loop runs, `PreemptionGuard` turns SIGTERM into a flag; the loop
checks it after every step, saves a checkpoint, waits for the asynchronous write to finish,
logs "preempted at step N; rerun the same command to resume" and raises `Preempted`, a
`SystemExit` with code 143 (128 + SIGTERM, the status a process killed by SIGTERM has), so
the command line exits without a traceback and `cmd && next` or a job script does not go
on as if the run had finished. A SystemExit is not an Exception: no `except Exception` on
the way out mistakes it for a failure. Outside the train loop (loading data, compiling,
the final evaluation) SIGTERM keeps its default action: nothing there is lost by dying.
SIGKILL cannot be caught; it loses at most the steps since the last checkpoint
(train.checkpoint_every), and a rerun resumes bit-exactly (tests/test_preemption.py).

In a multi-process run a signal may reach the processes at different steps, and every
process must stop at the same one (the checkpoint is a collective). There JAX's own
preemption service (started by `jax.distributed.initialize`) catches SIGTERM and
`reached_preemption_sync_point(step)` agrees on the step; we install no handler.

Non-finite steps. The jitted step (train/step.py) skips any update whose loss or gradient
norm is NaN/Inf, keeping params and optimizer state, and returns a 0/1 flag in its metrics.
`NonFiniteMonitor` reads those flags only when the loop logs or is about to checkpoint (no
host sync per step): with train.nonfinite="skip" it logs how many steps were skipped; with
"stop" it raises `NonFiniteError` before anything after the bad step is saved, so the last
checkpoint is the last good state.
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

import jax
from jax.experimental import multihost_utils
import numpy as np

log = logging.getLogger(__name__)

EXIT_CODE = 128 + signal.SIGTERM  # 143
NONFINITE_MODES = ("skip", "stop")


class Preempted(SystemExit):
  """Raised after the preemption checkpoint is written; exits the command with code 143."""

  def __init__(self, step: int, workdir):
    super().__init__(EXIT_CODE)
    self.step, self.workdir = step, str(workdir)


class NonFiniteError(ValueError):
  """train.nonfinite="stop" met a NaN/Inf loss or gradient (a ValueError: one-line CLI error)."""


class PreemptionGuard:
  """`with PreemptionGuard() as guard:` ... `if guard.should_stop(step): ...` in the loop."""

  def __init__(self):
    self.received = False
    self._previous = None
    self._multi = jax.process_count() > 1

  def _handle(self, signum, frame):  # runs on the main thread, between bytecodes
    if not self.received:
      log.warning("SIGTERM received: stopping after this step with a checkpoint")
    self.received = True

  def __enter__(self) -> "PreemptionGuard":
    # signal.signal works on the main thread only; elsewhere SIGTERM keeps its default.
    if not self._multi and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    return self

  def __exit__(self, *exc) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def should_stop(self, step: int) -> bool:
    """Called after every step, by every process with the same step."""
    if self._multi:
      try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
      except RuntimeError:  # the preemption service is switched off
        return False
    return self.received


def preempted(step: int, workdir) -> Preempted:
  """The exception to raise once the checkpoint of `step` is on disk (logs the line)."""
  log.warning("preempted at step %d; rerun the same command to resume (workdir %s)", step, workdir)
  return Preempted(step, workdir)


class NonFiniteMonitor:
  """Collects the step's on-device non-finite flags; reads them only in `check`."""

  def __init__(self, mode: str, ckpt_dir):
    if mode not in NONFINITE_MODES:
      raise ValueError(f"train.nonfinite={mode!r}; use one of {', '.join(NONFINITE_MODES)}")
    self.mode, self.ckpt_dir = mode, Path(ckpt_dir)
    self.pending: list[tuple[int, jax.Array]] = []  # (step number after the step, flag)
    self.total = 0

  def add(self, step: int, flag: jax.Array) -> None:
    self.pending.append((step, flag))

  def check(self, last_good_step=None) -> int:
    """Reads the pending flags (a host sync); returns how many steps were skipped.

    With mode "stop", raises NonFiniteError naming the first bad step and the last
    checkpoint; call it before every save so that nothing after a bad step is saved.
    """
    if not self.pending:
      return 0
    flags = np.asarray(jax.device_get([f for _, f in self.pending]), np.float32)
    bad = [s for (s, _), f in zip(self.pending, flags) if f > 0]
    self.pending = []
    if not bad:
      return 0
    self.total += len(bad)
    if self.mode == "stop":
      where = (f"the last good checkpoint is step {last_good_step} in {self.ckpt_dir}"
               if last_good_step is not None else "no checkpoint was saved yet")
      raise NonFiniteError(
          f"non-finite loss or gradients at step {bad[0]} (update skipped; train.nonfinite=stop); "
          f"{where}; lower optim.lr or check that step's inputs, or set "
          "--config.train.nonfinite=skip to skip such steps")
    log.warning("skipped %d step(s) with a non-finite loss or gradients (first: step %d; %d in "
                "all); params and optimizer state were kept as before each", len(bad), bad[0],
                self.total)
    return len(bad)
