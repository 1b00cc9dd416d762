"""jaxdistill.results_store on synthetic result files in tmp_path: the schema round trip, the
table's numbers against NumPy and jaxdistill.stats recomputed here, and one-line errors."""

import json
import re

import numpy as np
import pytest

from jaxdistill import stats
from jaxdistill.data.errors import DataError
from jaxdistill import results_store as rs

N_TEST = 400


def write(root, method, seed, correct, dev_acc=0.8, study="rt", **over):
  """One result file through write_result, at <root>/<study>/<method>_seed<seed>.json."""
  kw = dict(config={"method": method, "seed": seed}, commit="abc123", seed=seed, method=method,
            task="rotten_tomatoes", metrics={"dev": {"accuracy": dev_acc}, "test": {"accuracy": correct.mean()}},
            wall_seconds=12.5, cpu="test cpu", per_example_correct_test=correct, params=17_400_000)
  kw.update(over)
  return rs.write_result(rs.result_path(root, study, method, seed), **kw)


@pytest.fixture
def study(tmp_path):
  """Baseline (3 seeds), KD (3 seeds, clearly better), PKD (2 seeds, no better)."""
  rng = np.random.default_rng(0)
  runs = {}
  for seed in range(3):
    base = (rng.random(N_TEST) < 0.75).astype(np.int8)
    runs[("student_finetune", seed)] = base
    runs[("kd", seed)] = np.maximum(base, (rng.random(N_TEST) < 0.4).astype(np.int8))
    if seed < 2:
      runs[("pkd", seed)] = (rng.random(N_TEST) < 0.75).astype(np.int8)
  dev = {}
  for (method, seed), c in runs.items():
    dev[(method, seed)] = 0.7 + 0.01 * seed + 0.05 * (method == "kd")
    write(tmp_path, method, seed, c, dev_acc=dev[(method, seed)])
  return tmp_path, runs, dev


def test_round_trip(study):
  root, runs, _ = study
  path = rs.result_path(root, "rt", "kd", 1)
  raw = json.loads(path.read_text())
  assert set(raw) == set(rs.KEYS)
  assert raw["per_example_correct_test"] == "".join(map(str, runs[("kd", 1)].tolist()))
  loaded = rs.load_results(root)
  assert set(loaded) == {"rt"} and set(loaded["rt"]) == {"student_finetune", "kd", "pkd"}
  assert sorted(loaded["rt"]["pkd"]) == [0, 1]
  rec = loaded["rt"]["kd"][1]
  np.testing.assert_array_equal(rec["per_example_correct_test"], runs[("kd", 1)])
  assert rec["metrics"]["test"]["accuracy"] == pytest.approx(runs[("kd", 1)].mean())
  assert rec["config"] == {"method": "kd", "seed": 1} and rec["params"] == 17_400_000
  assert not list(root.rglob("*.tmp"))  # written atomically


def cells(table, label):
  row = next(l for l in table.splitlines() if l.startswith(f"| {label} |"))
  return [c.strip() for c in row.strip("|").split("|")]


def test_table_numbers_against_numpy(study):
  root, runs, dev = study
  table = rs.render_table(rs.load_results(root)["rt"], label_of={"kd": "Hinton KD", "pkd": "BERT-PKD"},
                          n_boot=2000)
  lines = table.splitlines()
  assert lines[2].startswith("| student_finetune |")  # baseline first, then label_of's order
  assert lines[3].startswith("| Hinton KD |") and lines[4].startswith("| BERT-PKD |")
  for method, label, seeds in (("kd", "Hinton KD", [0, 1, 2]), ("pkd", "BERT-PKD", [0, 1])):
    test = np.array([runs[(method, s)].mean() for s in seeds])
    devs = np.array([dev[(method, s)] for s in seeds])
    c = cells(table, label)
    assert c[1] == str(len(seeds)) and c[2] == "17.4M"
    assert c[3] == f"{100 * devs.mean():.2f} ± {100 * devs.std(ddof=1):.2f}"
    assert c[4] == f"{100 * np.median(devs):.2f}"
    assert c[5] == f"{100 * test.mean():.2f} ± {100 * test.std(ddof=1):.2f}"
    assert c[6] == f"{100 * np.median(test):.2f}"
    assert c[7] == "n/a" and c[9] == "n/a"  # no teacher in this study, no latency measured
    a = np.stack([runs[(method, s)] for s in seeds])
    b = np.stack([runs[("student_finetune", s)] for s in seeds])  # only the seeds both have
    diff, lo, hi = stats.paired_bootstrap_ci(a, b, n_boot=2000)
    assert diff == pytest.approx((a.mean(1) - b.mean(1)).mean())
    assert c[8].startswith(f"{100 * diff:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]")
    assert c[8].endswith("*") == (lo > 0 or hi < 0)
  assert cells(table, "Hinton KD")[8].endswith("*")  # ~+10 points on 400 examples
  assert not cells(table, "BERT-PKD")[8].endswith("*")  # independent draws: no real effect
  assert cells(table, "student_finetune")[8] == "baseline"
  note = lines[-1]
  assert "400 test examples" in note and "seeds 0, 1, 2" in note and "2,000 resamples" in note
  assert "95%" in note and "rotten_tomatoes" in note and "Commit(s) abc123" in note
  assert "Speedup: not measured" in note


def test_unpaired_seeds_are_left_out(tmp_path):
  rng = np.random.default_rng(1)
  write(tmp_path, "student_finetune", 0, (rng.random(50) < 0.5).astype(np.int8))
  write(tmp_path, "kd", 1, (rng.random(50) < 0.5).astype(np.int8))
  table = rs.render_table(rs.load_results(tmp_path)["rt"], n_boot=100)
  assert cells(table, "kd")[8] == "no common seeds"
  assert cells(table, "kd")[3].endswith("± n/a")  # one seed: no std


def test_a_missing_key_names_the_file_and_the_key(study):
  root, _, _ = study
  path = rs.result_path(root, "rt", "kd", 2)
  for drop, key in ((("cpu",), "'cpu'"), (("metrics", "test"), "'metrics.test'"),
                    (("metrics", "dev", "accuracy"), "'metrics.dev.accuracy'")):
    rec = json.loads(rs.result_path(root, "rt", "kd", 0).read_text())
    d = rec
    for k in drop[:-1]:
      d = d[k]
    del d[drop[-1]]
    path.write_text(json.dumps(rec))
    with pytest.raises(DataError, match=re.escape(f"{path}: missing key {key}")) as e:
      rs.load_results(root)
    assert "\n" not in str(e.value) and "write_result" in str(e.value)


def test_inconsistent_files_are_one_line_errors(study, tmp_path):
  root, runs, _ = study
  path = rs.result_path(root, "rt", "kd", 2)
  rec = json.loads(path.read_text())
  rec["metrics"]["test"]["accuracy"] = 0.5  # not what the per-example string gives
  path.write_text(json.dumps(rec))
  with pytest.raises(DataError, match=r"seed2.json: metrics.test.accuracy=0.5 but"):
    rs.load_results(root)
  rec["metrics"]["test"]["accuracy"] = float(runs[("kd", 2)].mean())
  rec["per_example_correct_test"] = rec["per_example_correct_test"].replace("1", "2", 1)
  path.write_text(json.dumps(rec))
  with pytest.raises(DataError, match="non-empty string of 0/1"):
    rs.load_results(root)
  path.write_text("{not json")
  with pytest.raises(DataError, match="not a readable JSON file"):
    rs.load_results(root)
  other = tmp_path / "moved"
  write(other, "kd", 0, runs[("kd", 0)])
  rs.result_path(other, "rt", "kd", 0).rename(other / "rt" / "kd_seed5.json")
  with pytest.raises(DataError, match=r"kd_seed5.json: holds method 'kd' seed 0, not 'kd' seed 5.*move it to"):
    rs.load_results(other)
  (other / "rt" / "kd_seed5.json").rename(other / "rt" / "kd-0.json")
  with pytest.raises(DataError, match=r"kd-0.json: result files are named <method>_seed<k>.json"):
    rs.load_study(other / "rt")
  with pytest.raises(DataError, match="params"):
    write(tmp_path / "x", "kd", 0, runs[("kd", 0)], params=0)


def test_baseline_missing_and_mixed_test_sets(study, tmp_path):
  root, runs, _ = study
  results = rs.load_results(root)["rt"]
  with pytest.raises(DataError, match=r"baseline 'theseus' has no results \(methods: \['kd', 'pkd', "
                                      r"'student_finetune'\]\); add its runs or pass baseline="):
    rs.render_table(results, baseline="theseus")
  write(root, "lad", 0, np.ones(N_TEST + 1, np.int8))  # another test split
  with pytest.raises(DataError, match="do not share one test set"):
    rs.render_table(rs.load_results(root)["rt"])


def test_teacher_row_retention_speedup_and_extras(study):
  """The teacher (one run) is paired with every baseline seed on the same examples; retention
  is mean test accuracy over the teacher's; speedup comes from a run's "latency" extra."""
  root, runs, _ = study
  rng = np.random.default_rng(7)
  teacher = np.maximum(runs[("student_finetune", 0)], (rng.random(N_TEST) < 0.3).astype(np.int8))
  write(root, "teacher", 0, teacher, extra={"dev_curve": [[10, 0.7], [20, 0.8]]}, params=22_700_000)
  path = rs.result_path(root, "rt", "kd", 1)
  rec = json.loads(path.read_text())
  rec["latency"] = {"speedup": 1.97, "batch": 32, "length": 64, "device": "cpu", "iters": 20}
  path.write_text(json.dumps(rec))  # on seed 1 only: the table takes the lowest seed's that has one
  loaded = rs.load_results(root)["rt"]
  assert loaded["teacher"][0]["dev_curve"] == [[10, 0.7], [20, 0.8]]
  table = rs.render_table(loaded, label_of={"teacher": "the teacher", "kd": "Hinton KD"}, n_boot=1000)
  lines = table.splitlines()
  assert lines[2].startswith("| the teacher |") and lines[3].startswith("| student_finetune |")
  t = cells(table, "the teacher")
  assert t[1] == "1" and t[2] == "22.7M" and t[7] == "100.0%" and t[9] == "1.00x"
  base = np.stack([runs[("student_finetune", s)] for s in range(3)])
  diff, lo, hi = stats.paired_bootstrap_ci(np.stack([teacher] * 3), base, n_boot=1000)
  assert t[8] == f"{100 * diff:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]" + ("*" if lo > 0 or hi < 0 else "")
  kd = cells(table, "Hinton KD")
  kd_mean = np.mean([runs[("kd", s)].mean() for s in range(3)])
  assert kd[7] == f"{100 * kd_mean / teacher.mean():.1f}%" and kd[9] == "1.97x"
  assert cells(table, "pkd")[9] == "n/a"
  assert "batch 32 x 64 tokens on cpu" in lines[-1] and "compared with every seed" in lines[-1]
  assert "seeds 0, 1, 2" in lines[-1]  # the teacher's seed is not a student seed
  with pytest.raises(DataError, match=r"extra keys \['seed'\] are schema keys"):
    write(root, "kd", 3, runs[("kd", 0)], extra={"seed": 1})


def test_dev_curve_keeps_the_last_value_of_a_repeated_step(tmp_path):
  path = tmp_path / "metrics.jsonl"
  rows = [{"step": 20, "train/loss": 0.5}, {"step": 40, "dev/accuracy": 0.7}, {"step": 80, "dev/accuracy": 0.75},
          {"step": 80, "dev/accuracy": 0.76}, {"step": 120, "dev/accuracy": 0.8, "dev/f1": 0.79}]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))  # the run resumed before step 80
  assert rs.dev_curve(path) == [[40, 0.7], [80, 0.76], [120, 0.8]]
  assert rs.dev_curve(tmp_path / "none.jsonl") == []
