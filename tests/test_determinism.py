"""Determinism: two runs of the same config and seed log identical metrics (every train loss,
gradient norm and dev metric, bit for bit) and end with identical params; another seed
changes them (so the comparison can fail).

Across device counts the result agrees within float tolerance, not bitwise (an all-reduce
sums in another order): tests/test_multidevice.py runs tiny KD and BERT-of-Theseus on 8
forced host devices (data=8, and data=4 x fsdp=2) against 1 device, comparing the loss curve
(rtol 1e-4) and the final params (atol 2e-5); tests/test_distributed.py does the same across
two processes. Restarted runs matching uninterrupted ones: tests/test_train_resume.py and
tests/test_preemption.py."""

import json

import jax
import numpy as np
import pytest

from jaxdistill.config_lib import load_config
from jaxdistill.testing import tiny_checkpoint
from jaxdistill.pipeline import run as train_and_evaluate


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
  d = tmp_path_factory.mktemp("ckpts")
  return (str(tiny_checkpoint(d / "teacher", num_layers=2, label_names=("rotten", "fresh"), seed=1)),
          str(tiny_checkpoint(d / "student", num_layers=2, seed=2)))


def run(ckpts, tmp_path, name, seed=0, **train):
  teacher, student = ckpts
  c = load_config("configs/pkd.py:tiny")  # KD + PKD: a teacher forward every step, dropout
  c.teacher.source, c.teacher.finetune = teacher, False
  c.student.source, c.student.init, c.student.layers = student, "pretrained", ()
  c.seed = seed
  c.train.epochs, c.train.log_every = 2, 1
  for k, v in train.items():
    c.train[k] = v
  c.report.export = c.report.compression = False
  c.cache_dir = str(tmp_path / "cache")
  out = train_and_evaluate(c, tmp_path / name)
  lines = [json.loads(l) for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
  for l in lines:
    l.pop("train/examples_per_s", None)  # wall-clock, the one thing allowed to differ
  return out, lines


def test_same_seed_same_metrics_and_params(ckpts, tmp_path):
  a, lines_a = run(ckpts, tmp_path, "a")
  b, lines_b = run(ckpts, tmp_path, "b")
  assert lines_a == lines_b
  assert sum("train/loss/pkd" in l for l in lines_a) == 12 and sum("dev/accuracy" in l for l in lines_a) == 2
  for x, y in zip(jax.tree.leaves(a["state"]), jax.tree.leaves(b["state"]), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  assert a["student"] == b["student"]
  # Another seed (data order, dropout) gives other losses from the first step on.
  _, lines_c = run(ckpts, tmp_path, "c", seed=1, stop_after=2)
  first = lambda lines: [l["train/loss"] for l in lines if "train/loss" in l][:2]
  assert first(lines_c) != first(lines_a)
