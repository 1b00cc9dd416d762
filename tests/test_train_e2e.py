"""End to end through the trainer: each first method on tiny checkpoints writes metrics, an
export that transformers loads, and (for distillation) the compression report; bad input is
a one-line error from the command line, never a traceback."""

import json

import jax
import numpy as np
import pytest

from jaxdistill.config_lib import load_config
from jaxdistill.testing import tiny_checkpoint
from jaxdistill.train.__main__ import main
from jaxdistill.pipeline import run as train_and_evaluate


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
  d = tmp_path_factory.mktemp("ckpts")
  return {"teacher": str(tiny_checkpoint(d / "teacher", num_layers=2, seed=1,
                                         label_names=("rotten", "fresh"))),
          "student": str(tiny_checkpoint(d / "student", num_layers=2, seed=2)),
          "bare": str(_without_classifier(tiny_checkpoint(d / "bare", num_layers=2, seed=3)))}


def _without_classifier(path):
  """A pretrained-style checkpoint: encoder and pooler only, as from BERT pre-training."""
  from safetensors.numpy import load_file, save_file
  weights = load_file(str(path / "model.safetensors"))
  save_file({k: v for k, v in weights.items() if not k.startswith("classifier")},
            str(path / "model.safetensors"))
  return path


def tiny_run_config(name, ckpts, tmp_path, **changes):
  c = load_config(f"configs/{name}.py:tiny")
  c.teacher.source = ckpts["teacher"] if c.teacher.source else ""
  c.teacher.finetune = False
  c.student.source, c.student.init, c.student.layers = ckpts["student"], "layers", (0,)
  c.cache_dir = str(tmp_path / "cache")
  c.report.latency_iters = 2
  for k, v in changes.items():
    section, key = k.split("__")
    c[section][key] = v
  return c


@pytest.mark.parametrize("name", ["student_finetune", "kd", "pkd"])
def test_methods_run_and_export(name, ckpts, tmp_path):
  import torch
  from transformers import BertForSequenceClassification
  c = tiny_run_config(name, ckpts, tmp_path)
  if name == "pkd":  # the skip map leaves out the top layer, so PKD needs two student layers
    c.student.layers = (0, 1)
  out = train_and_evaluate(c, tmp_path / name)
  assert set(out["student"]) == {"dev", "test"}
  assert 0.0 <= out["student"]["test"]["accuracy"] <= 1.0
  lines = [json.loads(l) for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
  losses = [l["train/loss"] for l in lines if "train/loss" in l]
  assert losses and all(np.isfinite(losses))
  if name != "student_finetune":
    assert {"train/loss/kd", "train/loss/hard_ce"} <= set().union(*lines)
    report = json.loads((tmp_path / name / "report.json").read_text())
    t, s = report["teacher_metrics"]["test"]["accuracy"], report["student_metrics"]["test"]["accuracy"]
    if t > 0:
      assert report["retention"]["test"] == pytest.approx(100 * s / t)
    assert report["student_params"] <= report["teacher_params"]
    assert report["speedup"] > 0
  if name == "pkd":
    assert any("train/loss/pkd" in l for l in lines)
  model, info = BertForSequenceClassification.from_pretrained(
      str(tmp_path / name / "export"), output_loading_info=True)
  assert not info["missing_keys"] and not info["unexpected_keys"]
  assert model.config.num_hidden_layers == len(c.student.layers)
  assert model.config.id2label == {0: "rotten", 1: "fresh"}
  if name == "pkd":
    c.student.layers = (0,)
    with pytest.raises(ValueError, match="pairs no layers of a 1-layer student"):
      train_and_evaluate(c, tmp_path / "pkd_1layer")


def _cli_error(capsys, args):
  code = main(args)
  err = capsys.readouterr().err.strip()
  assert code != 0
  assert "Traceback" not in err
  return err


def test_cli_errors_are_one_line(ckpts, tmp_path, capsys):
  base = ["--config", "configs/kd.py:tiny", "--workdir", str(tmp_path / "w"),
          f"--config.cache_dir={tmp_path / 'cache'}", f"--config.student.source={ckpts['student']}",
          "--config.teacher.finetune=false", "--config.student.layers=0"]
  err = _cli_error(capsys, base + [f"--config.teacher.source={ckpts['bare']}",
                                   "--config.data.task=files", "--config.data.train_file=/nope.csv"])
  assert err.startswith("error:") and "/nope.csv" in err
  csv = tmp_path / "d.csv"
  csv.write_text("review,label\ngood film,fresh\nbad film,rotten\n")
  err = _cli_error(capsys, base + [f"--config.teacher.source={ckpts['teacher']}",
                                   "--config.data.task=files", f"--config.data.train_file={csv}",
                                   f"--config.data.dev_file={csv}", "--config.data.text_column=text"])
  assert "text" in err and "review" in err  # names the missing column and the ones there are
  err = _cli_error(capsys, base + [f"--config.teacher.source={ckpts['bare']}"])
  assert "fine-tune" in err  # a teacher without a trained classifier
  err = _cli_error(capsys, base + [f"--config.teacher.source={ckpts['teacher']}",
                                   "--config.student.layers=0,5"])
  assert "student.layers" in err and "0..1" in err


@pytest.mark.slow
def test_demo_config_tiny_on_real_minilm(tmp_path, capsys):
  """The demo's config at tiny scale, through the CLI, on the real MiniLM (both stages)."""
  code = main(["--config", "configs/kd.py:tiny", "--workdir", str(tmp_path / "demo"),
               f"--config.cache_dir={tmp_path / 'cache'}"])
  out = capsys.readouterr().out
  assert code == 0
  assert "Compression report" in out and "retention" in out
  assert (tmp_path / "demo" / "teacher" / "export" / "DONE").exists()
  assert (tmp_path / "demo" / "report.md").exists()


def test_cached_teacher_logits_match_running_the_teacher(ckpts, tmp_path):
  """KD reads only the teacher's logits, so they are computed once; the run must end where a
  run that calls the teacher every step ends (misaligned rows would change it a lot)."""
  from safetensors.numpy import load_file, save_file
  sharp = tiny_checkpoint(tmp_path / "sharp", num_layers=2, seed=4, label_names=("rotten", "fresh"))
  w = load_file(str(sharp / "model.safetensors"))  # logits that differ a lot between reviews
  w["classifier.weight"] = w["classifier.weight"] * 300
  save_file(w, str(sharp / "model.safetensors"))
  finals, curves = {}, {}
  for cache in (True, False):
    c = tiny_run_config("kd", ckpts, tmp_path, train__cache_teacher_logits=cache)
    c.teacher.source = str(sharp)
    c.report.compression = c.report.export = False
    c.data.max_length, c.train.bucket_multiple = 32, 8  # several shapes: train and eval differ
    out = train_and_evaluate(c, tmp_path / f"cache_{cache}")
    finals[cache] = [np.asarray(x) for x in jax.tree.leaves(out["state"].trainable)]
    lines = (tmp_path / f"cache_{cache}" / "metrics.jsonl").read_text().splitlines()
    curves[cache] = [json.loads(l)["train/loss/kd"] for l in lines if "train/loss/kd" in l]
  np.testing.assert_allclose(curves[True], curves[False], rtol=1e-4)
  for a, b in zip(finals[True], finals[False], strict=True):
    np.testing.assert_allclose(a, b, atol=2e-5)
