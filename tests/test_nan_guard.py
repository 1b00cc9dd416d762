"""Non-finite steps: a poisoned training row (a regression target of 3e38, finite on disk, whose
squared error overflows to Inf) makes one step's loss and gradients non-finite. With
train.nonfinite=skip that step changes nothing (params and optimizer state, including Adam's
step count, equal the checkpoint before it), the metrics count it, and training goes on;
with train.nonfinite=stop the run ends with a one-line error naming the step and the last
good checkpoint, and nothing from that step on is saved."""

import json

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import transformers

from jaxdistill import data as data_lib
from jaxdistill.config_lib import load_config
from jaxdistill.models.hub import resolve_model_dir
from jaxdistill.testing import tiny_checkpoint
from jaxdistill.train.__main__ import main
from jaxdistill.pipeline import run as train_and_evaluate
from jaxdistill.train.preempt import NonFiniteMonitor

BAD_STEP = 3  # the poisoned row goes into the third batch of epoch 0


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  d = tmp_path_factory.mktemp("nan")
  student = str(tiny_checkpoint(d / "student", num_layers=1, seed=2))
  rows = [{"text": f"review number {i} says the film was {'good' if i % 2 else 'bad'}",
           "label": round(0.1 * (i % 7), 2)} for i in range(48)]
  train, dev = d / "train.jsonl", d / "dev.jsonl"
  dev.write_text("".join(json.dumps(r) + "\n" for r in rows[:16]))
  train.write_text("".join(json.dumps(r) + "\n" for r in rows))
  # Which row lands in batch BAD_STEP depends on token lengths, not on labels: ask the plan.
  cfg = config(student, train, dev, d).data
  tok = transformers.AutoTokenizer.from_pretrained(str(resolve_model_dir(student)))
  split = data_lib.load_task(cfg, tok).splits["train"]
  plan = data_lib.batch_plan(split.lengths, 8, train=True, seed=0, epoch=0, drop_remainder=True)
  rows[int(plan[BAD_STEP - 1][0])]["label"] = 3e38
  train.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return student, train, dev, d


def config(student, train, dev, d, nonfinite="skip"):
  c = load_config("configs/student_finetune.py:tiny")
  c.student.source, c.student.init, c.student.layers = student, "pretrained", ()
  c.data.task, c.data.train_file, c.data.dev_file = "files", str(train), str(dev)
  c.data.is_regression = True
  c.train.log_every, c.train.checkpoint_every, c.train.keep = 1, 1, 100
  c.train.nonfinite = nonfinite
  c.report.export = c.report.compression = False
  c.cache_dir = str(d / "cache")
  return c


def checkpoint(workdir, step) -> dict:
  manager = ocp.CheckpointManager(workdir.absolute() / "ckpt")
  tree = manager.restore(step, args=ocp.args.StandardRestore())
  manager.close()
  return tree


def flat(tree) -> list[np.ndarray]:
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_skip_keeps_params_and_optimizer_state(setup, tmp_path):
  student, train, dev, d = setup
  out = train_and_evaluate(config(student, train, dev, d), tmp_path / "skip")
  lines = [json.loads(l) for l in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
  flags = {l["step"]: l["train/nonfinite"] for l in lines if "train/nonfinite" in l}
  assert flags == {s: float(s == BAD_STEP) for s in range(1, 7)}
  assert not np.isfinite([l["train/loss"] for l in lines if l["step"] == BAD_STEP][0])
  before, bad, after = (checkpoint(tmp_path / "skip", s) for s in (BAD_STEP - 1, BAD_STEP, BAD_STEP + 1))
  assert int(bad["step"]) == BAD_STEP  # the batch was consumed: data order goes on
  for a, b in zip(flat([before["trainable"], before["opt_state"]]),
                  flat([bad["trainable"], bad["opt_state"]]), strict=True):
    np.testing.assert_array_equal(a, b)
  # ... and the step after it trained normally again.
  moved = [np.abs(a - b).max() for a, b in zip(flat(bad["trainable"]), flat(after["trainable"]))]
  assert max(moved) > 0
  assert all(np.isfinite(x).all() for x in flat(out["state"].trainable))
  assert np.isfinite(out["student"]["dev"]["pearson"])


def test_stop_ends_the_run_before_saving_the_bad_step(setup, tmp_path, capsys):
  student, train, dev, d = setup
  work = tmp_path / "stop"
  args = ["--config", "configs/student_finetune.py:tiny", "--workdir", str(work),
          f"--config.student.source={student}", "--config.student.init=pretrained",
          "--config.student.layers=", "--config.data.task=files",
          f"--config.data.train_file={train}", f"--config.data.dev_file={dev}",
          "--config.data.is_regression=true", "--config.train.log_every=1",
          "--config.train.checkpoint_every=1", "--config.train.keep=100",
          "--config.train.nonfinite=stop", "--config.report.export=false",
          "--config.report.compression=false", f"--config.cache_dir={d / 'cache'}"]
  assert main(args) == 1
  err = capsys.readouterr().err.strip().splitlines()[-1]
  assert err.startswith("error: non-finite loss or gradients at step 3")
  assert f"the last good checkpoint is step {BAD_STEP - 1}" in err and "train.nonfinite=skip" in err
  manager = ocp.CheckpointManager(work.absolute() / "ckpt")
  assert max(manager.all_steps()) == BAD_STEP - 1
  manager.close()


def test_nonfinite_mode_is_checked():
  with pytest.raises(ValueError, match="train.nonfinite='halt'; use one of skip, stop"):
    NonFiniteMonitor("halt", "/tmp")
