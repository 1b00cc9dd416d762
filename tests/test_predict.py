"""jaxdistill.predict: an export loads and classifies texts as transformers does with the
same checkpoint (the independent reference)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxdistill.predict import Classifier
from jaxdistill.testing import tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["a gorgeous, witty film", "two hours I will never get back", "fine",
         "an overlong and self-indulgent mess that nonetheless has moments of real grace " * 3]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
  out = tiny_checkpoint(tmp_path_factory.mktemp("predict") / "export", seed=3)
  cfg = json.loads((out / "config.json").read_text())
  cfg["id2label"], cfg["label2id"] = {"0": "rotten", "1": "fresh"}, {"rotten": 0, "fresh": 1}
  (out / "config.json").write_text(json.dumps(cfg))
  return out


def test_logits_match_transformers(export):
  torch = pytest.importorskip("torch")
  from transformers import AutoModelForSequenceClassification, AutoTokenizer
  tok = AutoTokenizer.from_pretrained(str(export))
  hf = AutoModelForSequenceClassification.from_pretrained(str(export)).eval()
  with torch.no_grad():
    want = np.stack([hf(**tok(t, return_tensors="pt")).logits[0].numpy() for t in TEXTS])
  clf = Classifier.load(str(export), batch_size=3)  # two batches, padded to a length bucket
  np.testing.assert_allclose(clf.logits(TEXTS), want, atol=1e-4)
  preds = clf(TEXTS)
  probs = np.exp(want) / np.exp(want).sum(1, keepdims=True)
  assert [p["label"] for p in preds] == [("rotten", "fresh")[k] for k in want.argmax(1)]
  np.testing.assert_allclose([p["score"] for p in preds], probs.max(1), atol=1e-4)


def test_an_export_without_a_trained_head_is_refused(tmp_path):
  from jaxdistill.models.hub import resolve_model_dir
  with pytest.raises(ValueError, match="no trained classifier head"):
    Classifier.load(str(resolve_model_dir("all-MiniLM-L6-v2")))


def test_the_command_line_prints_one_json_line_per_text(export):
  p = subprocess.run([sys.executable, "-m", "jaxdistill.predict", str(export), "great", "awful"],
                     capture_output=True, text=True, cwd=REPO)
  assert p.returncode == 0, p.stderr
  lines = [json.loads(l) for l in p.stdout.splitlines()]
  assert [l["text"] for l in lines] == ["great", "awful"] and {l["label"] for l in lines} <= {"rotten", "fresh"}
