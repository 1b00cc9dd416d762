"""Committed result files, one per run, and the table rendered from them. No JAX.

    results/<study>/<method>/seed<k>.json
    {
      "config": {...},                 # the run's config, as a dict
      "commit": "9f2c...",             # git commit the run was trained at
      "seed": 0, "method": "kd", "task": "rotten_tomatoes",
      "metrics": {"dev": {"accuracy": 0.81, ...}, "test": {"accuracy": 0.82, ...}},
      "wall_seconds": 512.3, "cpu": "AMD EPYC 7B13 (2 cores)",
      "per_example_correct_test": "0110...",   # one 0/1 per test example, in split order
      "params": 17400000
    }

The per-example string keeps the paired statistics recomputable without retraining: the
table's confidence intervals come from it, never from the accuracies alone.

    write_result("results/rt/kd/seed0.json", config=..., commit=..., ...)
    results = load_results("results")            # {study: {method: {seed: record}}}
    print(render_table(results["rt"], baseline="student_finetune", label_of={"kd": "Hinton KD"}))

`load_results` returns each record as written except `per_example_correct_test`, decoded to a
[n_examples] int8 array. Every problem with a file is one DataError line naming the file.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from pathlib import Path

import numpy as np

from jaxdistill import stats
from jaxdistill.data.errors import DataError

KEYS = ("config", "commit", "seed", "method", "task", "metrics", "wall_seconds", "cpu",
        "per_example_correct_test", "params")
SPLITS = ("dev", "test")
_FILE = re.compile(r"seed(\d+)\.json")
_FIX = "rewrite it with jaxdistill.results_store.write_result"
# The accuracy a file states and the one its per-example string gives agree to rounding;
# a larger gap means the string is not this run's (another test split, order or run).
_ACCURACY_TOLERANCE = 1e-6


def result_path(root, study: str, method: str, seed: int) -> Path:
  return Path(root) / study / method / f"seed{int(seed)}.json"


def encode_correct(correct) -> str:
  """0/1 (or bool) per test example -> "0110..."."""
  a = np.asarray(correct).reshape(-1)
  if a.size == 0 or not np.all((a == 0) | (a == 1)):
    raise DataError("per_example_correct_test must be a non-empty 0/1 sequence; pass "
                    "(predictions == labels) over the test split")
  return "".join("1" if v else "0" for v in a.tolist())


def decode_correct(text: str) -> np.ndarray:
  return np.frombuffer(text.encode("ascii"), np.uint8).astype(np.int8) - ord("0")


def _is_number(x) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def validate(record: dict, where: str) -> None:
  """Raises a one-line DataError naming `where` and the first missing or malformed key."""
  if not isinstance(record, dict):
    raise DataError(f"{where}: expected a JSON object with keys {list(KEYS)}; {_FIX}")
  for key in KEYS:
    if key not in record:
      raise DataError(f"{where}: missing key {key!r}; {_FIX}")
  metrics = record["metrics"]
  for split in SPLITS:
    if not isinstance(metrics, dict) or not isinstance(metrics.get(split), dict):
      raise DataError(f"{where}: missing key 'metrics.{split}'; {_FIX}")
    if "accuracy" not in metrics[split]:
      raise DataError(f"{where}: missing key 'metrics.{split}.accuracy'; {_FIX}")
    acc = metrics[split]["accuracy"]
    if not _is_number(acc) or not 0.0 <= acc <= 1.0:
      raise DataError(f"{where}: metrics.{split}.accuracy={acc!r} must be a fraction in [0, 1]; {_FIX}")
  checks = (("config", isinstance(record["config"], dict), "a dict"),
            ("commit", isinstance(record["commit"], str) and record["commit"] != "", "a non-empty string"),
            ("seed", isinstance(record["seed"], int) and not isinstance(record["seed"], bool), "an int"),
            ("method", isinstance(record["method"], str) and record["method"] != "", "a non-empty string"),
            ("task", isinstance(record["task"], str) and record["task"] != "", "a non-empty string"),
            ("wall_seconds", _is_number(record["wall_seconds"]) and record["wall_seconds"] >= 0,
             "a number >= 0"),
            ("cpu", isinstance(record["cpu"], str), "a string"),
            ("params", isinstance(record["params"], int) and not isinstance(record["params"], bool)
             and record["params"] > 0, "an int > 0"))
  for key, ok, what in checks:
    if not ok:
      raise DataError(f"{where}: {key}={record[key]!r:.60} must be {what}; {_FIX}")
  correct = record["per_example_correct_test"]
  if not isinstance(correct, str) or not correct or set(correct) - {"0", "1"}:
    raise DataError(f"{where}: per_example_correct_test must be a non-empty string of 0/1; {_FIX}")
  stated, counted = metrics["test"]["accuracy"], correct.count("1") / len(correct)
  if abs(stated - counted) > _ACCURACY_TOLERANCE:
    raise DataError(f"{where}: metrics.test.accuracy={stated} but per_example_correct_test gives "
                    f"{counted:.6f}; write both from the same test evaluation")


def write_result(path, *, config: dict, commit: str, seed: int, method: str, task: str,
                 metrics: dict, wall_seconds: float, cpu: str, per_example_correct_test,
                 params: int) -> Path:
  """Validates and writes one run's result file atomically (a crash never leaves half a file)."""
  correct = (per_example_correct_test if isinstance(per_example_correct_test, str)
             else encode_correct(per_example_correct_test))
  record = {"config": config, "commit": commit, "seed": int(seed), "method": method, "task": task,
            "metrics": {s: {k: float(v) if _is_number(v) else v for k, v in m.items()}
                        for s, m in metrics.items()},
            "wall_seconds": float(wall_seconds), "cpu": cpu,
            "per_example_correct_test": correct, "params": int(params)}
  path = Path(path)
  validate(record, str(path))
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
  os.replace(tmp, path)
  return path


def load_result(path) -> dict:
  path = Path(path)
  try:
    record = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DataError(f"{path}: not a readable JSON file ({type(e).__name__}: {e}); {_FIX}") from e
  validate(record, str(path))
  return {**record, "per_example_correct_test": decode_correct(record["per_example_correct_test"])}


def load_results(root) -> dict:
  """{study: {method: {seed: record}}} of every results/<study>/<method>/seed<k>.json."""
  root = Path(root)
  if not root.is_dir():
    raise DataError(f"results directory {str(root)!r} does not exist; pass the folder holding <study>/<method>/seed<k>.json")
  out: dict = {}
  for path in sorted(root.glob("*/*/*.json")):
    study, method = path.parent.parent.name, path.parent.name
    m = _FILE.fullmatch(path.name)
    if m is None:
      raise DataError(f"{path}: result files are named seed<k>.json; rename or remove it")
    record = load_result(path)
    if record["seed"] != int(m.group(1)) or record["method"] != method:
      raise DataError(f"{path}: holds method {record['method']!r} seed {record['seed']}, not "
                      f"{method!r} seed {m.group(1)} as its path says; move it to "
                      f"{result_path(root, study, record['method'], record['seed'])}")
    out.setdefault(study, {}).setdefault(method, {})[record["seed"]] = record
  return out


# ---- The table --------------------------------------------------------------------------------
def _pct(x: float) -> str:
  return "n/a" if math.isnan(x) else f"{100 * x:.2f}"


def _check_same_test_set(study: dict) -> tuple[str, int]:
  """(task, n test examples) shared by every run; paired statistics need one test set."""
  seen = {}
  for method, runs in study.items():
    for seed, r in runs.items():
      seen.setdefault((r["task"], r["per_example_correct_test"].size), f"{method}/seed{seed}")
  if len(seen) != 1:
    pairs = "; ".join(f"{run}: task {t!r}, {n} test examples" for (t, n), run in seen.items())
    raise DataError(f"the runs do not share one test set ({pairs}); keep one task and test split per study")
  return next(iter(seen))


def render_table(results: dict, baseline: str = "student_finetune", label_of: dict | None = None,
                 n_boot: int = 10000, boot_seed: int = 0, alpha: float = 0.05) -> str:
  """Markdown: per method, mean ± std and median of dev and test accuracy over seeds, n seeds,
  and the paired bootstrap CI of test accuracy minus the baseline's (seeds both have), "*"
  where it excludes 0; then a note line. `results` is one study: {method: {seed: record}}."""
  study = {m: runs for m, runs in results.items() if runs}
  if baseline not in study:
    raise DataError(f"baseline {baseline!r} has no results (methods: {sorted(study)}); "
                    "add its runs or pass baseline= one of these")
  task, n_test = _check_same_test_set(study)
  label_of = dict(label_of or {})
  order = [baseline] + [m for m in label_of if m in study and m != baseline]
  order += sorted(m for m in study if m not in order)
  level = round(100 * (1 - alpha))
  lines = [f"| method | seeds | dev accuracy | dev median | test accuracy | test median | "
           f"test − baseline, points [{level}% CI] |",
           "|---|---|---|---|---|---|---|"]
  base = study[baseline]
  for method in order:
    runs = study[method]
    seeds = sorted(runs)
    dev = stats.summary([runs[s]["metrics"]["dev"]["accuracy"] for s in seeds])
    test = stats.summary([runs[s]["metrics"]["test"]["accuracy"] for s in seeds])
    if method == baseline:
      ci = "baseline"
    else:
      paired = sorted(set(seeds) & set(base))
      if not paired:
        ci = "no common seeds"
      else:
        a = np.stack([runs[s]["per_example_correct_test"] for s in paired])
        b = np.stack([base[s]["per_example_correct_test"] for s in paired])
        diff, lo, hi = stats.paired_bootstrap_ci(a, b, n_boot=n_boot, seed=boot_seed, alpha=alpha)
        mark = "*" if stats.excludes_zero(lo, hi) else ""
        ci = f"{100 * diff:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]{mark}"
        if len(paired) < len(seeds):
          ci += f" ({len(paired)} paired seeds)"
    lines.append(f"| {label_of.get(method, method)} | {dev['n']} | {_pct(dev['mean'])} ± {_pct(dev['std'])} "
                 f"| {_pct(dev['median'])} | {_pct(test['mean'])} ± {_pct(test['std'])} "
                 f"| {_pct(test['median'])} | {ci} |")
  all_seeds = sorted({s for runs in study.values() for s in runs})
  lines.append("")
  lines.append(f"Task {task}, {n_test:,} test examples; seeds {', '.join(map(str, all_seeds))} "
               f"(per method: the seeds column); accuracy in %, mean ± std (ddof=1) over seeds. "
               f"CI: paired bootstrap of test accuracy minus the baseline's ({label_of.get(baseline, baseline)}), "
               f"seed i paired with seed i, {n_boot:,} resamples of the test examples (seed "
               f"{boot_seed}), percentile {level}% interval; * = it excludes 0.")
  return "\n".join(lines) + "\n"
