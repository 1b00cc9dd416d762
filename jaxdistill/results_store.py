"""Committed result files, one per run, and the table rendered from them. No JAX.

    results/<task>/<study>/<method>_seed<k>.json      e.g. results/rotten_tomatoes/l3/kd_seed0.json
    {
      "config": {...},                 # the run's config, as a dict
      "commit": "9f2c...",             # git commit the run was trained at
      "seed": 0, "method": "kd", "task": "rotten_tomatoes",
      "metrics": {"dev": {"accuracy": 0.81, ...}, "test": {"accuracy": 0.82, ...}},
      "wall_seconds": 512.3, "cpu": "AMD EPYC 7B13 (2 cores)",
      "per_example_correct_test": "0110...",   # one 0/1 per test example, in split order
      "params": 17400000,
      ...                              # optional extras: dev_curve, latency, study, ...
    }

The per-example string keeps the paired statistics recomputable without retraining: the
table's confidence intervals come from it, never from the accuracies alone. Optional keys
the table reads when present: "latency" ({"speedup", "batch", "length", "device", "iters"},
the teacher's median latency over this student's) and "dev_curve" ([[step, dev accuracy], ...]).

    write_result(result_path("results", "rotten_tomatoes/l3", "kd", 0), config=..., ...)
    study = load_study("results/rotten_tomatoes/l3")     # {method: {seed: record}}
    print(render_table(study, label_of={"kd": "Hinton KD"}))

`load_study` returns each record as written except `per_example_correct_test`, decoded to a
[n_examples] int8 array. Every problem with a file is one DataError line naming the file.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import subprocess
from pathlib import Path

import numpy as np

from jaxdistill import stats
from jaxdistill.data.errors import DataError

KEYS = ("config", "commit", "seed", "method", "task", "metrics", "wall_seconds", "cpu",
        "per_example_correct_test", "params")
SPLITS = ("dev", "test")
_FILE = re.compile(r"(.+)_seed(\d+)\.json")
_FIX = "rewrite it with jaxdistill.results_store.write_result"
# The accuracy a file states and the one its per-example string gives agree to rounding;
# a larger gap means the string is not this run's (another test split, order or run).
_ACCURACY_TOLERANCE = 1e-6


def result_path(root, study: str, method: str, seed: int) -> Path:
  """<root>/<study>/<method>_seed<k>.json; `study` may be nested ("rotten_tomatoes/l3")."""
  return Path(root) / study / f"{method}_seed{int(seed)}.json"


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
                 params: int, extra: dict | None = None) -> Path:
  """Validates and writes one run's result file atomically (a crash never leaves half a
  file). `extra`: further JSON keys (dev_curve, latency, ...), none of them a schema key."""
  correct = (per_example_correct_test if isinstance(per_example_correct_test, str)
             else encode_correct(per_example_correct_test))
  clash = sorted(set(extra or {}) & set(KEYS))
  if clash:
    raise DataError(f"extra keys {clash} are schema keys; pass them as write_result's arguments")
  record = {**(extra or {}),
            "config": config, "commit": commit, "seed": int(seed), "method": method, "task": task,
            "metrics": {s: {k: float(v) if _is_number(v) else v for k, v in m.items()}
                        for s, m in metrics.items()},
            "wall_seconds": float(wall_seconds), "cpu": cpu,
            "per_example_correct_test": correct, "params": int(params)}
  path = Path(path)
  validate(record, str(path))
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(f".json.{os.getpid()}.tmp")  # parallel writers never share a temp file
  tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n", encoding="utf-8")
  os.replace(tmp, path)
  return path


def git_commit(cwd=None) -> str:
  """The checkout's commit, "-dirty" when its working tree had changes (the run's code is
  then not exactly that commit's)."""
  try:
    return subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], capture_output=True,
                          text=True, timeout=30, cwd=cwd).stdout.strip() or "unknown"
  except (OSError, subprocess.SubprocessError):
    return "unknown"


def dev_curve(metrics_jsonl) -> list:
  """[[step, dev accuracy], ...] from a run's metrics.jsonl ([] without one); a step logged
  twice (a resumed run) keeps its last value."""
  path, curve = Path(metrics_jsonl), {}
  for line in path.read_text().splitlines() if path.is_file() else []:
    row = json.loads(line)
    if "dev/accuracy" in row:
      curve[int(row["step"])] = round(float(row["dev/accuracy"]), 6)
  return [[s, a] for s, a in sorted(curve.items())]


def load_result(path) -> dict:
  path = Path(path)
  try:
    record = json.loads(path.read_text(encoding="utf-8"))
  except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
    raise DataError(f"{path}: not a readable JSON file ({type(e).__name__}: {e}); {_FIX}") from e
  validate(record, str(path))
  return {**record, "per_example_correct_test": decode_correct(record["per_example_correct_test"])}


def load_study(directory) -> dict:
  """{method: {seed: record}} of every <method>_seed<k>.json in `directory` (not below it)."""
  directory = Path(directory)
  if not directory.is_dir():
    raise DataError(f"results directory {str(directory)!r} does not exist; train the study "
                    "first (python -m jaxdistill.results) or pass the folder holding <method>_seed<k>.json")
  out: dict = {}
  for path in sorted(directory.glob("*.json")):
    m = _FILE.fullmatch(path.name)
    if m is None:
      raise DataError(f"{path}: result files are named <method>_seed<k>.json; rename or remove it")
    record = load_result(path)
    if record["seed"] != int(m.group(2)) or record["method"] != m.group(1):
      raise DataError(f"{path}: holds method {record['method']!r} seed {record['seed']}, not "
                      f"{m.group(1)!r} seed {m.group(2)} as its name says; move it to "
                      f"{result_path(directory, '.', record['method'], record['seed'])}")
    out.setdefault(record["method"], {})[record["seed"]] = record
  return out


def load_results(root) -> dict:
  """{study: {method: {seed: record}}} of every folder under `root` holding result files,
  the study named by its path relative to root ("rotten_tomatoes/l3")."""
  root = Path(root)
  if not root.is_dir():
    raise DataError(f"results directory {str(root)!r} does not exist; pass the folder holding <study>/<method>_seed<k>.json")
  dirs = sorted({p.parent for p in root.rglob("*_seed*.json")})
  return {d.relative_to(root).as_posix(): load_study(d) for d in dirs}


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


def _paired_ci(runs: dict, base: dict, shared: bool, n_boot: int, boot_seed: int, alpha: float) -> str:
  """The CI cell of one method against the baseline. `shared`: one run (the teacher) that
  every baseline seed is compared with; otherwise seed i is paired with baseline seed i."""
  seeds = sorted(runs)
  paired = sorted(base) if shared else sorted(set(seeds) & set(base))
  if not paired:
    return "no common seeds"
  a = np.stack([runs[seeds[0] if shared else s]["per_example_correct_test"] for s in paired])
  b = np.stack([base[s]["per_example_correct_test"] for s in paired])
  diff, lo, hi = stats.paired_bootstrap_ci(a, b, n_boot=n_boot, seed=boot_seed, alpha=alpha)
  mark = "*" if stats.excludes_zero(lo, hi) else ""
  cell = f"{100 * diff:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}]{mark}"
  if not shared and len(paired) < len(seeds):
    cell += f" ({len(paired)} paired seeds)"
  return cell


def _speedup(runs: dict) -> tuple[str, dict | None]:
  """The speedup cell from the lowest seed's "latency" record, and that record."""
  for seed in sorted(runs):
    lat = runs[seed].get("latency")
    if isinstance(lat, dict) and _is_number(lat.get("speedup")):
      return f"{lat['speedup']:.2f}x", lat
  return "n/a", None


def render_table(results: dict, baseline: str = "student_finetune", label_of: dict | None = None,
                 n_boot: int = 10000, boot_seed: int = 0, alpha: float = 0.05, *,
                 teacher: str = "teacher", note: str = "") -> str:
  """Markdown: per method (the teacher first, then the baseline), n seeds, parameters, mean ±
  std and median of dev and test accuracy over seeds, retention (mean test accuracy over the
  teacher's), the paired bootstrap CI of test accuracy minus the baseline's, "*" where it
  excludes 0, and the measured speedup; then a note line (with `note` appended).
  `results` is one study: {method: {seed: record}}."""
  study = {m: runs for m, runs in results.items() if runs}
  if baseline not in study:
    raise DataError(f"baseline {baseline!r} has no results (methods: {sorted(study)}); "
                    "add its runs or pass baseline= one of these")
  task, n_test = _check_same_test_set(study)
  label_of = dict(label_of or {})
  order = [m for m in (teacher, baseline) if m in study]
  order += [m for m in label_of if m in study and m not in order]
  order += sorted(m for m in study if m not in order)
  level = round(100 * (1 - alpha))
  t_acc = (stats.summary([r["metrics"]["test"]["accuracy"] for r in study[teacher].values()])["mean"]
           if teacher in study else math.nan)
  lines = [f"| model | seeds | parameters | dev accuracy | dev median | test accuracy | test median "
           f"| retention | test − no teacher, points [{level}% CI] | speedup |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  base, latency = study[baseline], None
  for method in order:
    runs = study[method]
    seeds = sorted(runs)
    dev = stats.summary([runs[s]["metrics"]["dev"]["accuracy"] for s in seeds])
    test = stats.summary([runs[s]["metrics"]["test"]["accuracy"] for s in seeds])
    shared = method == teacher and len(seeds) == 1
    ci = "baseline" if method == baseline else _paired_ci(runs, base, shared, n_boot, boot_seed, alpha)
    speed, lat = ("1.00x", None) if method == teacher else _speedup(runs)
    latency = latency or lat
    retention = "n/a" if math.isnan(t_acc) else f"{100 * test['mean'] / t_acc:.1f}%"
    lines.append(f"| {label_of.get(method, method)} | {dev['n']} | {runs[seeds[0]]['params'] / 1e6:.1f}M "
                 f"| {_pct(dev['mean'])} ± {_pct(dev['std'])} | {_pct(dev['median'])} "
                 f"| {_pct(test['mean'])} ± {_pct(test['std'])} | {_pct(test['median'])} "
                 f"| {retention} | {ci} | {speed} |")
  records = [r for runs in study.values() for r in runs.values()]
  all_seeds = sorted({r["seed"] for m, runs in study.items() if m != teacher for r in runs.values()})
  commits = sorted({r["commit"] for r in records})
  machines = sorted({r["cpu"] for r in records})
  shared_note = (f" The teacher is one run, compared with every seed of the baseline."
                 if teacher in study and len(study[teacher]) == 1 else "")
  speed_note = (f" Speedup: the teacher's median latency over the student's at batch "
                f"{latency.get('batch')} x {latency.get('length')} tokens on {latency.get('device')}, "
                f"interleaved, {latency.get('iters')} iterations, measured once per method."
                if latency else " Speedup: not measured (n/a).")
  lines.append("")
  lines.append(f"Task {task}, {n_test:,} test examples; student seeds {', '.join(map(str, all_seeds))} "
               f"(per method: the seeds column); accuracy in %, mean ± std (ddof=1) over seeds. "
               f"CI: paired bootstrap of test accuracy minus the baseline's ({label_of.get(baseline, baseline)}), "
               f"seed i paired with seed i, {n_boot:,} resamples of the test examples (seed "
               f"{boot_seed}), percentile {level}% interval; * = it excludes 0.{shared_note}"
               f"{speed_note} Training time of these runs: {sum(r['wall_seconds'] for r in records) / 60:.0f} "
               f"minutes in all. Commit(s) {', '.join(commits)}; machine(s) {'; '.join(machines)}."
               + (f" {note}" if note else ""))
  return "\n".join(lines) + "\n"
