"""Training on tiny checkpoints: a run interrupted and restarted in the same workdir ends with
exactly the params of an uninterrupted run; the same seed gives the same params."""

import jax
import numpy as np
import pytest

from jaxdistill.config_lib import load_config
from jaxdistill.testing import tiny_checkpoint
from jaxdistill.pipeline import run as train_and_evaluate


@pytest.fixture(scope="module")
def tiny_pair(tmp_path_factory):
  d = tmp_path_factory.mktemp("ckpts")
  teacher = tiny_checkpoint(d / "teacher", num_layers=2, label_names=("rotten", "fresh"), seed=1)
  student = tiny_checkpoint(d / "student", num_layers=1, seed=2)
  return str(teacher), str(student)


def kd_config(teacher, student, tmp_path):
  c = load_config("configs/kd.py:tiny")
  c.teacher.source, c.teacher.finetune = teacher, False
  c.student.source, c.student.init, c.student.layers = student, "pretrained", ()
  c.train.epochs = 2
  c.train.checkpoint_every = 2
  c.report.export = c.report.compression = False
  c.cache_dir = str(tmp_path / "cache")
  return c


def _leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state.trainable)]


def test_resume_is_exact(tiny_pair, tmp_path):
  teacher, student = tiny_pair
  full = train_and_evaluate(kd_config(teacher, student, tmp_path), tmp_path / "full")
  c = kd_config(teacher, student, tmp_path)
  c.train.stop_after = 7  # mid-epoch (6 steps an epoch) and past a checkpoint at step 6
  part = train_and_evaluate(c, tmp_path / "interrupted")
  assert part["stopped_at"] == 7
  resumed = train_and_evaluate(kd_config(teacher, student, tmp_path), tmp_path / "interrupted")
  assert int(resumed["state"].step) == int(full["state"].step) == 12
  for a, b in zip(_leaves(full["state"]), _leaves(resumed["state"]), strict=True):
    np.testing.assert_array_equal(a, b)
  assert resumed["student"] == full["student"]
  # And the run really trained: the final params moved away from the initial ones.
  c0 = kd_config(teacher, student, tmp_path)
  c0.train.stop_after = 1
  first = train_and_evaluate(c0, tmp_path / "one_step")
  moved = [np.abs(a - b).max() for a, b in zip(_leaves(first["state"]), _leaves(full["state"]))]
  assert max(moved) > 1e-4
