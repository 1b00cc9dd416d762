"""Multi-stage runs (config.stages), frozen parameters (optim.train_only / freeze) and the
train-split override: the pieces every multi-stage method (TinyBERT, MiniLM with a teacher
assistant, DistilBERT, MobileBERT, the BiLSTM) is built from."""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from jaxdistill.config_lib import ConfigError, load_config
from jaxdistill.models.hub import load_pretrained, params_of
from jaxdistill.testing import tiny_checkpoint
from jaxdistill.pipeline import run as train_and_evaluate
from jaxdistill.config_lib import check_stages


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
  d = tmp_path_factory.mktemp("stage_ckpts")
  return {"teacher": str(tiny_checkpoint(d / "teacher", num_layers=2, seed=1,
                                         label_names=("rotten", "fresh"))),
          "student": str(tiny_checkpoint(d / "student", num_layers=2, seed=2))}


def _config(ckpts, tmp_path):
  c = load_config("configs/kd.py:tiny")
  c.teacher.source, c.teacher.finetune = ckpts["teacher"], False
  c.student.source, c.student.init, c.student.layers = ckpts["student"], "layers", (0,)
  c.cache_dir = str(tmp_path / "cache")
  c.report.compression = False
  return c


def _flat(params):
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}


def test_stages_chain_exports_and_rerun_skips_done_stages(ckpts, tmp_path):
  c = _config(ckpts, tmp_path)
  c.report.compression, c.report.latency_iters = True, 1
  c.stages = (
      {"name": "first", "set": {"losses.kd": 0.0, "losses.hard_ce": 1.0}},
      {"name": "second", "set": {"student.source": "@stage:first", "student.init": "pretrained",
                                 "optim.train_only": ("student/classifier/",)}},
  )
  out = train_and_evaluate(c, tmp_path / "run")
  first = tmp_path / "run" / "first" / "export"
  assert (first / "DONE").exists() and (tmp_path / "run" / "export" / "DONE").exists()
  assert json.loads((first / "DONE").read_text())["name"] == f"{c.name}_first"
  assert out["name"] == f"{c.name}_second"
  # The second stage started from the first's export and, with train_only, changed only the
  # classifier: every other parameter is bitwise the first stage's.
  a = _flat(params_of(load_pretrained(str(first))[0]))
  b = _flat(params_of(load_pretrained(str(tmp_path / "run" / "export"))[0]))
  changed = {k for k in a if not np.array_equal(a[k], b[k])}
  assert changed and all("classifier" in k for k in changed), changed
  # One rule for the report's training time: every train stage of the run, summed.
  report = json.loads((tmp_path / "run" / "report.json").read_text())
  first_s = json.loads((first / "DONE").read_text())["train_seconds"]
  last_s = json.loads((tmp_path / "run" / "export" / "DONE").read_text())["train_seconds"]
  assert report["train_stages"] == pytest.approx({"first": first_s, "second": last_s})
  assert report["train_seconds"] == pytest.approx(first_s + last_s)
  # Rerunning skips the finished first stage (its files stay untouched).
  stamp = (first / "model.safetensors").stat().st_mtime_ns
  train_and_evaluate(c, tmp_path / "run")
  assert (first / "model.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("stages, message", [
    (({"name": "a", "set": {"optim.lrr": 1.0}},), "did you mean optim.lr"),
    (({"name": "a", "set": {"optim.lr": "fast"}},), "optim.lr expects float"),
    (({"name": "a", "set": {"student.source": "@stage:b"}}, {"name": "b"}), "names no earlier stage"),
    (({"name": "a"}, {"name": "a"}), "repeated or reserved"),
    (({"name": "a", "sett": {}},), "unknown fields"),
    (({"name": "a", "run": "nope"},), "run='nope'"),
])
def test_bad_stages_fail_before_anything_runs(stages, message, ckpts, tmp_path):
  c = _config(ckpts, tmp_path)
  c.stages = stages
  with pytest.raises(ConfigError, match=message):
    train_and_evaluate(c, tmp_path / "bad")
  assert not (tmp_path / "bad" / "a").exists()


def test_check_stages_accepts_references_to_earlier_stages(ckpts, tmp_path):
  c = _config(ckpts, tmp_path)
  c.stages = ({"name": "a"}, {"name": "b", "set": {"teacher.source": "@stage:a"}})
  check_stages(c)


def test_freeze_keeps_matching_params_and_train_override_replaces_train(ckpts, tmp_path):
  c = _config(ckpts, tmp_path)
  rows = [{"text": "a fine film", "label": "fresh"}, {"text": "dull and long"},
          {"text": "bad", "label": "rotten"}] * 8
  path = tmp_path / "aug.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  c.data.train_override = str(path)
  c.optim.freeze = ("student/embeddings/",)
  c.report.export = True
  out = train_and_evaluate(c, tmp_path / "frozen")
  before = _flat(params_of(load_pretrained(ckpts["student"], num_labels=2)[0]))
  after = _flat(out["state"].trainable["student"])
  emb = [k for k in after if "embeddings" in k]
  assert emb and all(np.array_equal(before[k], after[k]) for k in emb)
  assert any(not np.array_equal(before[k], after[k]) for k in after if "layers" in k)
  # 24 override rows at batch 8: 3 steps per epoch (the task's own train split has 48).
  lines = [json.loads(l) for l in (tmp_path / "frozen" / "metrics.jsonl").read_text().splitlines()]
  assert max(l["step"] for l in lines) == 3


def test_the_teacher_stage_is_fine_tuned_from_the_runs_config_not_a_stages(tmp_path, monkeypatch):
  """multi_teacher_kd's first stage sets seed+1 (its second teacher): the teacher stage must
  still train with the run's seed, or both teachers are the same model."""
  from jaxdistill import config_lib, pipeline
  from jaxdistill.train.loop import DONE
  seen = []

  def fake_train_stage(config, workdir, **_):
    seen.append((config.name, config.seed, config.method, tuple(config.stages)))
    (Path(workdir) / "export").mkdir(parents=True, exist_ok=True)
    (Path(workdir) / "export" / DONE).write_text("{}")
    return {}

  monkeypatch.setattr(pipeline, "train_stage", fake_train_stage)
  c = config_lib.load_config("configs/multi_teacher_kd.py:tiny")
  pipeline.run(c, tmp_path)
  assert seen[0][:3] == (f"{c.name}_teacher", c.seed, "finetune") and seen[0][3] == ()
  assert seen[1][:3] == (f"{c.name}_teacher_b", c.seed + 1, "finetune")
  assert [s[0] for s in seen] == [f"{c.name}_teacher", f"{c.name}_teacher_b", f"{c.name}_distil"]
