"""`python -m jaxdistill.results` for Rotten Tomatoes: a tiny study (a teacher, 2 methods x 2
seeds) end to end through the per-run JSON files and the rendered table. The per-example
correctness is checked against jaxdistill.predict.Classifier on the raw test reviews, the CI
against jaxdistill.stats on the same 0/1 data, and --render-only against a deleted workdir.
The settings, studies and seed parsing are checked on configs alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from jaxdistill import results as R
from jaxdistill import results_store, stats
from jaxdistill.core.errors import ConfigError

N_TEST = 48  # the tiny preset keeps the first 48 reviews of every split


def cells(table: str, label: str) -> list[str]:
  row = next(l for l in table.splitlines() if l.startswith(f"| {label} |"))
  return [c.strip() for c in row.strip("|").split("|")]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
  from jaxdistill.testing import tiny_checkpoint
  root = tmp_path_factory.mktemp("rt_study")
  ckpt = tiny_checkpoint(root / "source", num_layers=6, label_names=("rotten", "fresh"), seed=3)
  readme = root / "README.md"
  readme.write_text("intro\n<!-- RESULTS:rt_tiny_rt:BEGIN -->\nold\n<!-- RESULTS:rt_tiny_rt:END -->\nend\n")
  argv = ["--study", "tiny_rt", "--variant", "tiny", "--methods", "student_finetune,kd", "--seeds", "2",
          "--workdir", str(root / "runs"), "--results-dir", str(root / "results"), "--readme", str(readme),
          "--latency-iters", "2", "--n-boot", "2000",
          # A high learning rate, so that 6 steps leave tiny models that disagree on some reviews.
          "--set", f"student.source={ckpt}", "--set", f"cache_dir={root / 'cache'}", "--set", "optim.lr=3e-3",
          "--teacher-set", f"student.source={ckpt}", "--teacher-set", f"cache_dir={root / 'cache'}",
          "--teacher-set", "optim.lr=3e-3"]
  assert R.main(argv) == 0
  return root, argv, readme


def test_one_file_per_run_with_per_example_correctness(tiny_study):
  from jaxdistill.data.rotten_tomatoes import load_reviews, split_indices
  from jaxdistill.predict import Classifier
  root, _, _ = tiny_study
  out = root / "results" / "rotten_tomatoes" / "tiny_rt"
  assert sorted(p.name for p in out.glob("*.json")) == [
      "kd_seed0.json", "kd_seed1.json", "student_finetune_seed0.json", "student_finetune_seed1.json",
      "teacher_seed0.json"]
  study = results_store.load_study(out)
  texts, labels = load_reviews()
  test = split_indices(texts, labels)["test"][:N_TEST]
  for method, seed, run in (("teacher", 0, "teacher"), ("kd", 1, "tiny_rt/kd_s1"),
                            ("student_finetune", 0, "tiny_rt/student_finetune_s0")):
    rec, run_dir = study[method][seed], root / "runs" / run
    done = json.loads((run_dir / "export" / "DONE").read_text())
    assert rec["metrics"]["test"]["accuracy"] == pytest.approx(done["student"]["test"]["accuracy"], abs=1e-12)
    assert "accuracy_in_run" not in rec["metrics"]["test"]  # the export reproduces the run's score
    assert rec["metrics"]["dev"] == pytest.approx(done["student"]["dev"])
    # Independent reference: the export classifies the raw test reviews through its own tokenizer.
    clf = Classifier.load(str(run_dir / "export"), max_length=32)
    want = (clf.logits([texts[i] for i in test]).argmax(-1) == labels[test]).astype(np.int8)
    np.testing.assert_array_equal(rec["per_example_correct_test"], want)
    assert rec["seed"] == seed and rec["task"] == "rotten_tomatoes" and rec["commit"]
    assert rec["config"]["seed"] == seed and rec["wall_seconds"] > 0 and rec["params"] == done["student_params"]
  teacher = study["teacher"][0]
  assert [s for s, _ in teacher["dev_curve"]] == [6, 12, 18]  # 3 epochs of 6 steps, one eval each
  assert teacher["config"]["train"]["epochs"] == 3
  assert study["kd"][0]["config"]["student"]["source"] == str(root / "source")
  assert "latency" in study["kd"][0] and "latency" not in study["kd"][1]  # once per method
  assert study["kd"][0]["latency"]["iters"] == 2 and study["kd"][0]["latency"]["speedup"] > 0


def test_table_against_stats_and_render_only_from_the_files(tiny_study):
  root, argv, readme = tiny_study
  study = results_store.load_study(root / "results" / "rotten_tomatoes" / "tiny_rt")
  table = (root / "results" / "rotten_tomatoes" / "tiny_rt" / "table.md").read_text()
  a = np.stack([study["kd"][s]["per_example_correct_test"] for s in (0, 1)])
  b = np.stack([study["student_finetune"][s]["per_example_correct_test"] for s in (0, 1)])
  assert (a != b).any() and 0 < a.mean() < 1  # not a degenerate pair of constant predictors
  diff, lo, hi = stats.paired_bootstrap_ci(a, b, n_boot=2000)
  accs = {m: np.array([study[m][s]["metrics"]["test"]["accuracy"] for s in (0, 1)]) for m in ("kd", "student_finetune")}
  assert diff == pytest.approx((accs["kd"] - accs["student_finetune"]).mean())
  kd = cells(table, "Hinton KD")
  assert kd[1] == "2" and kd[8] == f"{100 * diff:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]" + ("*" if lo > 0 or hi < 0 else "")
  assert kd[5] == f"{100 * accs['kd'].mean():.2f} ± {100 * accs['kd'].std(ddof=1):.2f}"
  t_acc = study["teacher"][0]["metrics"]["test"]["accuracy"]
  assert kd[7] == f"{100 * accs['kd'].mean() / t_acc:.1f}%"
  assert kd[9] == f"{study['kd'][0]['latency']['speedup']:.2f}x"
  assert cells(table, "student fine-tuned without a teacher")[8] == "baseline"
  assert cells(table, "6-layer MiniLM teacher (fine-tuned)")[9] == "1.00x"
  assert "Ad-hoc study tiny_rt." in table and f"{N_TEST} test examples" in table
  text = readme.read_text()
  assert "old" not in text and text.startswith("intro\n") and text.endswith("end\n") and table.rstrip() in text
  # A second run trains nothing and rewrites no file; then the table renders with runs/ gone.
  before = {p: p.read_text() for p in (root / "results").rglob("*.json")}
  assert R.main(argv) == 0
  assert {p: p.read_text() for p in (root / "results").rglob("*.json")} == before
  shutil.rmtree(root / "runs")
  readme.write_text("<!-- RESULTS:rt_tiny_rt:BEGIN -->\n<!-- RESULTS:rt_tiny_rt:END -->\n")
  assert R.main(["--study", "tiny_rt", "--render-only", "--results-dir", str(root / "results"),
                 "--readme", str(readme), "--n-boot", "2000"]) == 0
  assert (root / "results" / "rotten_tomatoes" / "tiny_rt" / "table.md").read_text() == table
  assert table.rstrip() in readme.read_text()


def test_seeds_settings_and_studies(tmp_path):
  assert R.parse_seeds("5") == [0, 1, 2, 3, 4] and R.parse_seeds("0,1,2") == [0, 1, 2]
  assert R.parse_seeds("3,") == [3] and R.parse_seeds("2,0") == [0, 2]
  for bad in ("0", "x", "-1,2", ""):
    with pytest.raises(ConfigError, match="give a count"):
      R.parse_seeds(bad)
  with pytest.raises(ConfigError, match=r"name a new study \(--study my_l3\)"):
    R.resolve("l3", "", None, adhoc=True)
  with pytest.raises(ConfigError, match="unknown study 'nope'"):
    R.resolve("nope", "", None, adhoc=False)
  with pytest.raises(ConfigError, match=r"\['pkd'\] are not part of setting 'l1'"):
    R.resolve("l1", "", "kd,pkd", adhoc=False)
  with pytest.raises(ConfigError, match="runs in setting 'l3'; drop --setting=l1"):
    R.resolve("lad_gate1", "l1", None, adhoc=False)
  spec, methods = R.resolve("l1", "", None, adhoc=False)
  assert methods == ["student_finetune", "kd", "theseus", "lad", "minilm"]
  assert R.resolve("l3", "", "", adhoc=False)[1] == []  # the teacher alone
  teacher = tmp_path / "teacher"
  for method in methods:
    c = R.method_config(method, spec, 4, teacher)
    assert tuple(c.student.layers) == (0,) and c.seed == 4 and c.teacher.workdir == str(teacher)
    assert c.report.compression is False
  l3 = R.method_config("theseus", R.STUDIES["l3"], 0, teacher)
  assert tuple(l3.student.layers) == (0, 1, 2) and l3.optim.lr == 2e-5
  start = R.method_config("student_finetune", R.STUDIES["baseline_theseus_start"], 1, teacher)
  assert start.student.source == str(teacher / "export") and tuple(start.student.layers) == (0, 1, 2)
  authors = R.method_config("theseus", R.STUDIES["theseus_authors"], 0, teacher)
  assert (authors.theseus.linear_k, authors.theseus.rate, authors.theseus.finetune_epochs) == (6e-4, 0.1, 0)
  lad = R.method_config("lad", R.STUDIES["lad_authors"], 0, teacher)
  assert (lad.train.epochs, lad.optim.warmup_ratio, lad.lad.average_over) == (20, 0.3, "padded")
  assert R.method_config("pkd", R.STUDIES["pkd_beta500"], 0, teacher).losses.pkd == pytest.approx(500 / 768)
  assert R.teacher_config().train.epochs == 3
  for name, study in R.STUDIES.items():  # every experiment builds its configs
    for method in study.methods or R.SETTINGS[study.setting].methods:
      R.method_config(method, study, 0, teacher)
  assert R.markers("l3") == ("<!-- RESULTS:BEGIN -->", "<!-- RESULTS:END -->")
  assert R.markers("l1") == ("<!-- RESULTS:rt_l1:BEGIN -->", "<!-- RESULTS:rt_l1:END -->")


def test_an_experiment_is_shown_beside_its_setting(tmp_path):
  """An experiment's rows are renamed `<method>, <study>`, the setting's runs of the same
  methods (and of `compare`) shown as `<method>, l3`, all against l3's baseline and teacher."""
  rng = np.random.default_rng(0)
  correct = {}

  def write(study, method, seed, p):
    c = correct[(study, method, seed)] = (rng.random(400) < p).astype(np.int8)
    results_store.write_result(
        results_store.result_path(tmp_path / "rotten_tomatoes", study, method, seed), config={}, commit="c0ffee",
        seed=seed, method=method, task="rotten_tomatoes", wall_seconds=1.0, cpu="cpu", params=17_400_000,
        metrics={"dev": {"accuracy": 0.8}, "test": {"accuracy": float(c.mean())}}, per_example_correct_test=c)

  for study, methods in (("l3", ("student_finetune", "theseus", "kd")), ("baseline_theseus_start", ("student_finetune",)),
                         ("theseus_rate1", ("theseus",))):
    write(study, "teacher", 0, 0.85)
    for method in methods:
      for seed in (0, 1):
        write(study, method, seed, 0.8)
  table = R.render("baseline_theseus_start", R.STUDIES["baseline_theseus_start"], tmp_path, n_boot=1000)
  base = np.stack([correct[("l3", "student_finetune", s)] for s in (0, 1)])
  variant = np.stack([correct[("baseline_theseus_start", "student_finetune", s)] for s in (0, 1)])
  diff, lo, hi = stats.paired_bootstrap_ci(variant, base, n_boot=1000)
  row = cells(table, "student fine-tuned without a teacher, baseline_theseus_start")
  assert row[8].startswith(f"{100 * diff:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]")
  assert cells(table, "student fine-tuned without a teacher")[8] == "baseline"
  assert cells(table, "student fine-tuned without a teacher")[5].startswith(f"{100 * base.mean():.2f} ±")
  theseus = np.stack([correct[("l3", "theseus", s)] for s in (0, 1)])
  assert cells(table, "BERT-of-Theseus, l3")[5].startswith(f"{100 * theseus.mean():.2f} ±")  # compare=
  assert "Hinton KD" not in table and "results/rotten_tomatoes/l3" in table
  table = R.render("theseus_rate1", R.STUDIES["theseus_rate1"], tmp_path, n_boot=1000)
  rate1 = np.stack([correct[("theseus_rate1", "theseus", s)] for s in (0, 1)])
  assert cells(table, "BERT-of-Theseus, theseus_rate1")[5].startswith(f"{100 * rate1.mean():.2f} ±")
  assert cells(table, "BERT-of-Theseus, l3") and len([l for l in table.splitlines() if l.startswith("| ")]) == 5
  assert (tmp_path / "rotten_tomatoes" / "theseus_rate1" / "table.md").read_text() == table
