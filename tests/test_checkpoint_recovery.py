"""Damaged checkpoints: the newest step is corrupted on disk in each way a crash, a full disk or
a bad copy can leave it (truncated or overwritten array data, garbage metadata, no commit
marker, no commit timestamp, missing arrays); restoring must notice, warn, move it aside and
return the previous step exactly. Garbage written over array bytes restores without any
error from orbax itself (checked below), so only the checksum catches it. A checkpoint of a
different model is an error that names the fix, never silently discarded. End to end, a run
whose last checkpoint is damaged resumes from the one before and ends where an uninterrupted
run ends."""

import glob
import json
import logging
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from jaxdistill.train.checkpoint import Checkpoints, state_checksum
from jaxdistill.train.step import TrainState

TX = optax.adam(1e-3)


def make_state(step: int, width: int = 64) -> TrainState:
  rng = np.random.default_rng(step)
  # `table` holds random bits, which zstd cannot compress: its bytes lie in the file verbatim.
  trainable = {"student": {"w": jnp.asarray(rng.normal(size=(width, width)), jnp.float32),
                           "b": jnp.asarray(rng.normal(size=(width,)), jnp.float32)},
               "aux": {"table": jnp.asarray(rng.integers(-2**31, 2**31, size=8192), jnp.int32)}}
  opt = TX.init(trainable)
  opt = jax.tree.map(lambda x: x + 1 if x.dtype == jnp.float32 else x + step, opt)
  return TrainState(jnp.asarray(step, jnp.int32), trainable, opt)


def leaves(state) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(state)]


def biggest_data_file(step_dir: Path) -> str:
  return max(glob.glob(str(step_dir / "default" / "ocdbt.process_0" / "d" / "*")), key=os.path.getsize)


def _overwrite_middle(step_dir: Path) -> None:
  path = biggest_data_file(step_dir)
  with open(path, "r+b") as f:
    f.seek(os.path.getsize(path) // 2)
    f.write(bytes(range(256)) * 4)


def _overwrite_array_bytes(step_dir: Path) -> None:
  """Garbage over stored array values (not over any compression framing): the kind of damage
  nothing but a checksum notices."""
  table = np.asarray(make_state(int(step_dir.name)).trainable["aux"]["table"]).tobytes()
  for path in glob.glob(str(step_dir / "default" / "**" / "d" / "*"), recursive=True):
    data = Path(path).read_bytes()
    at = data.find(table[4096:4160])
    if at >= 0:
      with open(path, "r+b") as f:
        f.seek(at)
        f.write(bytes(range(64)))
      return
  raise AssertionError(f"the table's bytes are not stored verbatim in {step_dir}")


def _truncate(step_dir: Path) -> None:
  path = biggest_data_file(step_dir)
  with open(path, "r+b") as f:
    f.truncate(os.path.getsize(path) // 3)


def _strip_commit_timestamp(step_dir: Path) -> None:
  meta = json.loads((step_dir / "_CHECKPOINT_METADATA").read_text())
  meta.pop("commit_timestamp_nsecs")
  (step_dir / "_CHECKPOINT_METADATA").write_text(json.dumps(meta))


CORRUPTIONS = {
    "garbage_over_array_values": _overwrite_array_bytes,
    "garbage_mid_file": _overwrite_middle,
    "truncated_array_file": _truncate,
    "garbage_tree_metadata": lambda d: (d / "default" / "_METADATA").write_text("{not json"),
    "garbage_step_metadata": lambda d: (d / "_CHECKPOINT_METADATA").write_bytes(b"\x00\xff" * 10),
    "no_commit_marker": lambda d: (d / "commit_success.txt").unlink(),
    "no_commit_timestamp": _strip_commit_timestamp,
    "arrays_missing": lambda d: shutil.rmtree(d / "default" / "ocdbt.process_0"),
    "empty_manifest": lambda d: (d / "default" / "manifest.ocdbt").write_bytes(b""),
}


def saved_run(workdir: Path, steps=(1, 2, 3)) -> Checkpoints:
  ckpt = Checkpoints(workdir, keep=5, primary_metric="accuracy")
  for s in steps:
    ckpt.save(make_state(s))
  ckpt.wait()
  return ckpt


@pytest.mark.parametrize("how", sorted(CORRUPTIONS))
def test_damaged_latest_falls_back_to_the_previous(how, tmp_path, caplog):
  saved_run(tmp_path).close()
  CORRUPTIONS[how](tmp_path / "ckpt" / "3")
  ckpt = Checkpoints(tmp_path, keep=5, primary_metric="accuracy")
  with caplog.at_level(logging.WARNING, logger="jaxdistill.train.checkpoint"):
    restored = ckpt.restore_latest(make_state(0))
  assert int(restored.step) == 2
  for a, b in zip(leaves(restored), leaves(make_state(2)), strict=True):
    np.testing.assert_array_equal(a, b)
  assert "checkpoint step 3" in caplog.text and "damaged" in caplog.text
  assert ckpt.latest_step() == 2 and (tmp_path / "ckpt_corrupt" / "3").is_dir()
  # Training goes on: step 3 is saved again, not skipped as "already there".
  ckpt.save(make_state(3))
  ckpt.close()
  again = Checkpoints(tmp_path, keep=5, primary_metric="accuracy").restore_latest(make_state(0))
  assert int(again.step) == 3


def test_garbage_over_array_values_needs_the_checksum(tmp_path):
  """Without our checksum this damage would go unnoticed: orbax restores it without error."""
  saved_run(tmp_path).close()
  _overwrite_array_bytes(tmp_path / "ckpt" / "3")
  manager = ocp.CheckpointManager((tmp_path / "ckpt").absolute())
  raw = manager.restore(3, args=ocp.args.StandardRestore())  # no error ...
  manager.close()
  changed = np.asarray(raw["trainable"]["aux"]["table"]) != np.asarray(make_state(3).trainable["aux"]["table"])
  assert changed.sum() == 16  # ... but 16 values are garbage


def test_every_checkpoint_damaged_starts_over_with_a_warning(tmp_path, caplog):
  saved_run(tmp_path, steps=(1, 2)).close()
  for s in (1, 2):
    _overwrite_array_bytes(tmp_path / "ckpt" / str(s))
  with caplog.at_level(logging.WARNING, logger="jaxdistill.train.checkpoint"):
    restored = Checkpoints(tmp_path, keep=5, primary_metric="accuracy").restore_latest(make_state(0))
  assert restored is None and "starting from step 0" in caplog.text


def test_a_different_model_is_an_error_not_corruption(tmp_path):
  saved_run(tmp_path).close()
  ckpt = Checkpoints(tmp_path, keep=5, primary_metric="accuracy")
  with pytest.raises(ValueError, match="different model or optimizer.*new --workdir"):
    ckpt.restore_latest(make_state(0, width=48))
  assert sorted(ckpt.resume.all_steps()) == [1, 2, 3]  # nothing was moved aside
  ckpt.close()


def test_checksum_sees_one_flipped_bit_and_the_order_of_values():
  state = make_state(5)
  base = state_checksum(state)

  def with_w(w):
    return state._replace(trainable={**state.trainable, "student": {**state.trainable["student"],
                                                                    "w": jnp.asarray(w)}})

  w = np.asarray(state.trainable["student"]["w"]).copy()
  assert state_checksum(with_w(w)) == base == state_checksum(make_state(5))
  flipped = w.copy()
  flipped.view(np.uint32)[7, 3] ^= 1  # the lowest mantissa bit of one element
  assert state_checksum(with_w(flipped)) != base
  swapped = w.copy()
  swapped[[0, 1]] = swapped[[1, 0]]  # the same values in another order
  assert state_checksum(with_w(swapped)) != base


def test_damaged_best_falls_back_to_final_params(tmp_path, caplog):
  ckpt = Checkpoints(tmp_path, keep=5, primary_metric="accuracy")
  params = make_state(4).trainable
  assert ckpt.save_best(4, params, {"accuracy": 0.5})
  for a, b in zip(leaves(ckpt.best_params(params)), leaves(params), strict=True):
    np.testing.assert_array_equal(a, b)
  _overwrite_array_bytes(tmp_path / "best" / "4")
  with caplog.at_level(logging.WARNING, logger="jaxdistill.train.checkpoint"):
    assert ckpt.best_params(params) is None
  assert "best checkpoint (step 4) is damaged" in caplog.text
  ckpt.close()


def test_run_resumes_from_the_checkpoint_before_a_damaged_one(tmp_path):
  from jaxdistill.config_lib import load_config
  from jaxdistill.testing import tiny_checkpoint
  from jaxdistill.pipeline import run as train_and_evaluate
  student = str(tiny_checkpoint(tmp_path / "student", num_layers=1, seed=2))

  def config(**train):
    c = load_config("configs/student_finetune.py:tiny")
    c.student.source, c.student.init, c.student.layers = student, "pretrained", ()
    c.train.epochs, c.train.checkpoint_every, c.train.keep = 2, 2, 5
    c.report.export = c.report.compression = False
    c.cache_dir = str(tmp_path / "cache")
    for k, v in train.items():
      c.train[k] = v
    return c

  full = train_and_evaluate(config(), tmp_path / "full")
  part = train_and_evaluate(config(stop_after=8), tmp_path / "run")
  assert part["stopped_at"] == 8
  _overwrite_middle(tmp_path / "run" / "ckpt" / "8")  # the stop's checkpoint, damaged
  resumed = train_and_evaluate(config(), tmp_path / "run")
  assert (tmp_path / "run" / "ckpt_corrupt" / "8").is_dir()
  for a, b in zip(leaves(full["state"]), leaves(resumed["state"]), strict=True):
    np.testing.assert_array_equal(a, b)
