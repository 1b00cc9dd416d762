"""The extension point, proven by features written against the Method interface alone:
multi-teacher KD (methods/multi_teacher.py), loss-weight and temperature schedules
(methods/schedules.py), evaluation callbacks, and a user's method in a file outside the
package (examples/my_method.py), each run end to end through the CLI on tiny configs.
"""

from __future__ import annotations

import json
import re
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill import methods
from jaxdistill.core.outputs import BertOutput
from jaxdistill.methods.multi_teacher import MultiKD
from jaxdistill.methods.schedules import Schedule
from jaxdistill.models import tiny_config
from jaxdistill.train.__main__ import main

REPO = Path(__file__).resolve().parents[1]


def _softmax(z):
  e = np.exp(z - z.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("combine", ["probs", "logits"])
def test_multi_kd_matches_the_numpy_formula(combine):
  r = np.random.default_rng(0)
  s, t1, t2 = (r.normal(size=(5, 3)).astype(np.float32) for _ in range(3))
  w, T = (0.7, 0.3), 2.5
  term = MultiKD(Schedule(T), w, combine)
  x = methods.Inputs(BertOutput(logits=jnp.asarray(s)), None, {"example_weight": jnp.ones((5,))},
                     {}, tiny_config(), None, teachers=(BertOutput(logits=jnp.asarray(t1)),
                                                        BertOutput(logits=jnp.asarray(t2))))
  if combine == "probs":
    p = w[0] * _softmax(t1 / T) + w[1] * _softmax(t2 / T)
  else:
    p = _softmax((w[0] * t1 + w[1] * t2) / T)
  q = _softmax(s / T)
  expected = T * T * np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=-1))
  assert float(term(x)) == pytest.approx(expected, rel=1e-5)
  with pytest.raises(ValueError, match="one per teacher"):
    MultiKD(Schedule(T), (1.0,), combine)(x)


def _metrics(workdir: Path) -> list[dict]:
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
  return tmp_path_factory.mktemp("shared_teacher")


@pytest.mark.slow
def test_multi_teacher_kd_end_to_end(tmp_path, caplog):
  caplog.set_level(logging.INFO)
  work = tmp_path / "mt"
  rc = main(["--config", str(REPO / "configs/multi_teacher_kd.py:tiny"), "--workdir", str(work)])
  assert rc == 0
  # Both teachers' logits, and nothing else of them, computed once (train/teacher_cache.py).
  assert re.search(r"teacher cache: computed, 2 of \d+ teacher output\(s\)", caplog.text), caplog.text[-2000:]
  assert (work / "export" / "DONE").exists() and (work / "teacher_b" / "export" / "DONE").exists()
  train = [m for m in _metrics(work) if "train/loss/multi_kd" in m]
  assert train and all(np.isfinite(m["train/loss/multi_kd"]) for m in train)
  assert json.loads((work / "config.json").read_text())["multi_teacher"]["sources"] == [
      str(work / "teacher_b" / "export")]


@pytest.mark.slow
def test_schedules_callbacks_and_wandb_through_the_cli(tmp_path, teacher_dir, monkeypatch):
  pytest.importorskip("wandb")
  from wandb_reader import history
  log = tmp_path / "callback.jsonl"
  monkeypatch.setenv("JAXDISTILL_CALLBACK_LOG", str(log))
  for var in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
    monkeypatch.setenv(var, str(tmp_path / var.lower()))
  monkeypatch.setenv("WANDB_SILENT", "true")
  work = tmp_path / "kd"
  rc = main(["--config", str(REPO / "configs/kd.py:tiny"), "--workdir", str(work),
             f"--config.teacher.workdir={teacher_dir}", "--config.train.eval_every=2",
             "--config.loss_schedules.kd=linear:0", "--config.kd.temperature_schedule=cosine:1",
             f"--config.callbacks={REPO / 'examples/eval_callback.py'}:log_dev",
             "--config.logging.wandb=true", "--config.logging.wandb_mode=offline"])
  assert rc == 0
  calls = [json.loads(l) for l in log.read_text().splitlines()]
  dev = [m for m in _metrics(work) if "dev/accuracy" in m]
  assert [c["step"] for c in calls] == [m["step"] for m in dev] and len(calls) >= 2
  for c, m in zip(calls, dev):
    assert c["accuracy"] == pytest.approx(m["dev/accuracy"]) and c["params"] > 0
  # the same dev metrics, logged to the offline W&B run
  logged = {int(r["_step"]): r["dev/accuracy"] for r in history(work) if "dev/accuracy" in r}
  assert logged == {m["step"]: pytest.approx(m["dev/accuracy"]) for m in dev}


@pytest.mark.slow
def test_a_method_in_a_file_outside_the_package_runs_from_the_cli(tmp_path, teacher_dir):
  work = tmp_path / "mine"
  rc = main(["--config", str(REPO / "configs/kd.py:tiny"), "--workdir", str(work),
             f"--config.teacher.workdir={teacher_dir}",
             f"--config.method_module={REPO / 'examples/my_method.py'}", "--config.method=my_method",
             "--config.losses.kd=0", "--config.losses.cw_kd=1", "--config.my_method.temperature=3"])
  assert rc == 0
  train = [m for m in _metrics(work) if "train/loss/cw_kd" in m]
  assert train and "train/loss/kd" not in train[0]
  saved = json.loads((work / "config.json").read_text())
  assert saved["method"] == "my_method" and saved["my_method"]["temperature"] == 3.0
  assert "my_method" in json.loads((work / "report.json").read_text())["method"]


def test_an_unknown_method_module_is_a_one_line_error(tmp_path, capsys):
  rc = main(["--config", str(REPO / "configs/kd.py:tiny"), "--workdir", str(tmp_path),
             "--config.method_module=nowhere/mine.py"])
  assert rc == 2
  err = capsys.readouterr().err.strip()
  assert "nowhere/mine.py" in err and "does not exist" in err and len(err.splitlines()) == 1
