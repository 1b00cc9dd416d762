"""The NER/SQuAD results table renders from the committed per-run files alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxdistill import results_token_span as R


def _write(root, method, seed, test_f1, dev_f1=0.5):
  rec = {"task": "ner", "method": method, "seed": seed, "commit": "abc1234", "cpu": "cpu x",
         "metrics": {"test": {"f1": test_f1, "precision": 0.4, "recall": 0.3},
                     "dev": {"f1": dev_f1}}, "params": 1, "wall_seconds": 1.0, "config": {}}
  (root / "ner").mkdir(parents=True, exist_ok=True)
  (root / "ner" / f"{method}_seed{seed}.json").write_text(json.dumps(rec))


def test_means_stds_and_paired_differences(tmp_path):
  _write(tmp_path, "teacher", 0, 0.40)
  for seed, (b, k) in enumerate([(0.30, 0.33), (0.32, 0.31), (0.28, 0.33)]):
    _write(tmp_path, "student_finetune", seed, b)
    _write(tmp_path, "kd", seed, k)
  table = R.render("ner", R.load("ner", tmp_path))
  kd = next(l for l in table.splitlines() if l.startswith("| Hinton KD"))
  k = np.array([33, 31, 33.0])
  assert f"| 3 | {k.mean():.2f} ± {k.std(ddof=1):.2f} |" in kd
  assert "+2.33 (+3.00, -1.00, +5.00)" in kd  # seed i of KD minus seed i of the baseline
  assert "| 6-layer MiniLM teacher (fine-tuned) | 1 | 40.00 |" in table
  readme = tmp_path / "README.md"
  readme.write_text("a\n<!-- RESULTS:ner:BEGIN -->\nold\n<!-- RESULTS:ner:END -->\nb\n")
  R.update_readme(readme, "ner", table)
  text = readme.read_text()
  assert "old" not in text and kd in text and text.startswith("a\n") and text.endswith("b\n")


def test_no_files_is_a_clear_error(tmp_path):
  with pytest.raises(ValueError, match="no result files for 'squad'"):
    R.render("squad", R.load("squad", tmp_path))
