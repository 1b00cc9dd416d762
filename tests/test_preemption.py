"""Preemption: a real training process (`python -m jaxdistill.train`, tiny KD) killed at
random moments, SIGKILL several times and SIGTERM once, and restarted each time with the same
command, ends with bit-for-bit the checkpoint (params, optimizer state, step) of an
uninterrupted run, and every step it logged twice logged the same loss.

SIGTERM must exit with code 143 after writing a checkpoint of the step it stopped at and
logging "preempted at step N; rerun the same command to resume". A SIGKILL (exit -9) may cut
a checkpoint write short: the restart must ignore it and resume from the last whole one.

The delays are random (printed on failure); the subprocesses share the test session's
persistent compilation cache, so a restart loads its programs instead of compiling them.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxdistill.testing import tiny_checkpoint
from jaxdistill.train.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
STEPS = 60  # 48 examples / batch 8 = 6 steps an epoch, 10 epochs

pytestmark = pytest.mark.heavy  # ~1 CPU-minute of real subprocess runs; CI runs it after the default suite


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
  d = tmp_path_factory.mktemp("ckpts")
  return (str(tiny_checkpoint(d / "teacher", num_layers=2, label_names=("rotten", "fresh"), seed=1)),
          str(tiny_checkpoint(d / "student", num_layers=1, seed=2)))


def cli_args(ckpts, workdir, cache) -> list[str]:
  teacher, student = ckpts
  return ["--config", str(ROOT / "configs/kd.py:tiny"), "--workdir", str(workdir),
          f"--config.teacher.source={teacher}", "--config.teacher.finetune=false",
          f"--config.student.source={student}", "--config.student.init=pretrained",
          "--config.student.layers=", "--config.train.epochs=10",
          "--config.train.checkpoint_every=4", "--config.train.eval_every=1000",
          # A logged loss is the mean since the last log line; a SIGTERM checkpoint can land
          # between log lines, so log every step to compare step for step.
          "--config.train.log_every=1",
          "--config.report.export=false", "--config.report.compression=false",
          f"--config.cache_dir={cache}"]


def final_checkpoint(workdir) -> dict:
  manager = ocp.CheckpointManager(Path(workdir).absolute() / "ckpt")
  step = manager.latest_step()
  tree = manager.restore(step, args=ocp.args.StandardRestore())
  manager.close()
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in jax.tree_util.tree_leaves_with_path(tree)}


def logged_losses(workdir) -> list[tuple[int, float]]:
  lines = [json.loads(l) for l in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]
  return [(l["step"], l["train/loss"]) for l in lines if "train/loss" in l]


def subprocess_env() -> dict:
  env = dict(os.environ)
  if jax.config.jax_compilation_cache_dir:  # the session's cache (tests/conftest.py)
    env["JAX_COMPILATION_CACHE_DIR"] = jax.config.jax_compilation_cache_dir
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
  env.pop("JAXDISTILL_TRACEBACK", None)
  return env


def run_and_interrupt(args, workdir, sig, delay, log_path):
  """Starts the command; once it has logged a new training line, waits `delay` s and sends
  `sig` (None: lets it finish). Returns (exit code, output); exit code 0 if it finished."""
  metrics = Path(workdir) / "metrics.jsonl"
  seen = len(metrics.read_text().splitlines()) if metrics.exists() else 0
  with open(log_path, "w") as log:
    proc = subprocess.Popen([sys.executable, "-m", "jaxdistill.train", *args], cwd=ROOT,
                            env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
      deadline = time.time() + 120
      while proc.poll() is None and time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) > seen:
          break
        time.sleep(0.05)
      if sig is not None:
        end = time.time() + delay
        while proc.poll() is None and time.time() < end:
          time.sleep(0.01)
        if proc.poll() is None:
          proc.send_signal(sig)
      code = proc.wait(timeout=300)
    finally:
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  return code, Path(log_path).read_text()


def test_killed_and_restarted_run_ends_bit_exact(ckpts, tmp_path):
  cache = tmp_path / "cache"
  ref_dir = tmp_path / "uninterrupted"
  assert main(cli_args(ckpts, ref_dir, cache)) == 0  # in-process: also fills the compile cache
  reference = final_checkpoint(ref_dir)
  assert int(reference["['step']"]) == STEPS

  work = tmp_path / "interrupted"
  args = cli_args(ckpts, work, cache)
  rng = random.Random()
  plan = [(signal.SIGKILL, rng.uniform(0.0, 1.0)) for _ in range(3)]
  plan.insert(rng.randrange(0, 2), (signal.SIGTERM, rng.uniform(0.0, 1.0)))
  history = []
  for i, (sig, delay) in enumerate(plan):
    code, out = run_and_interrupt(args, work, sig, delay, tmp_path / f"run{i}.log")
    history.append((sig.name, round(delay, 3), code))
    if code == 0:  # it finished before the signal: nothing left to interrupt
      break
    if sig == signal.SIGKILL:
      assert code == -signal.SIGKILL, (history, out[-2000:])
    else:
      assert code == 143, (history, out[-2000:])
      stopped = re.search(r"preempted at step (\d+); rerun the same command to resume", out)
      assert stopped, (history, out[-2000:])
      # The checkpoint of the step it stopped at is whole on disk before the exit.
      manager = ocp.CheckpointManager(work.absolute() / "ckpt")
      assert manager.latest_step() == int(stopped.group(1)), history
      manager.close()
  landed = [h for h in history if h[2] != 0]
  assert len(landed) >= 3 and ("SIGTERM", 143) in [(h[0], h[2]) for h in landed], \
      f"too few interruptions landed during training: {history}"
  if history[-1][2] != 0:
    code, out = run_and_interrupt(args, work, None, 0.0, tmp_path / "last.log")
    assert code == 0, (history, out[-2000:])

  resumed = final_checkpoint(work)
  assert resumed.keys() == reference.keys()
  for k in reference:
    np.testing.assert_array_equal(resumed[k], reference[k], err_msg=f"{k} after {history}")
  # Steps run again after a restart logged exactly the loss the uninterrupted run logged.
  ref_losses = dict(logged_losses(ref_dir))
  again = logged_losses(work)
  assert len(again) >= len(ref_losses)
  for step, loss in again:
    assert loss == ref_losses[step], (step, history)
  assert not list((work / "ckpt").glob("*orbax-checkpoint-tmp*"))  # cut-off saves cleaned up
