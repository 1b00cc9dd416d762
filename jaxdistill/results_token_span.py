"""The README's NER and SQuAD rows: `python -m jaxdistill.results --task ner|squad`.

    python -m jaxdistill.results --task ner --seeds 0,1,2      # trains what is missing, then renders
    python -m jaxdistill.results --task squad --seeds 0 --render-only

One teacher per task (configs/<task>_finetune.py in <workdir>/teacher), then every student
method over the seeds, each reading that same teacher's export (runs/<task>/<method>_s<seed>,
resumable like any run). Each finished run becomes one small JSON file under
results/<task>/ (config, commit, seed, metrics, wall time, CPU), and the table is rendered from
those files alone, so a later machine without runs/ re-renders or extends it.
"""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path

import numpy as np

from jaxdistill.config_lib import apply_overrides, load_config
from jaxdistill.pipeline import run as run_pipeline
from jaxdistill.train.loop import DONE

STUDIES = {
    "ner": [("teacher", "6-layer MiniLM teacher (fine-tuned)"),
            ("student_finetune", "3-layer student, no teacher"),
            ("kd", "Hinton KD (per labelled token)"), ("pkd", "BERT-PKD (skip) + KD")],
    "squad": [("teacher", "6-layer MiniLM teacher (fine-tuned)"),
              ("student_finetune", "3-layer student, no teacher"),
              ("kd", "Hinton KD (start and end distributions)"), ("pkd", "BERT-PKD (skip) + KD")],
}
SECOND = {"ner": ("precision", "recall"), "squad": ("exact_match",)}


def _cpu() -> str:
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown"


def _commit() -> str:
  out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
  return out.stdout.strip() or "unknown"


def train(task: str, workdir: Path, seeds: list[int]) -> None:
  """Trains the runs of the study that are not finished yet (teacher first)."""
  teacher = workdir / "teacher"
  if not (teacher / "export" / DONE).exists():
    run_pipeline(load_config(f"configs/{task}_finetune.py"), teacher)
  for seed in seeds:
    for method, _ in STUDIES[task][1:]:
      run_dir = workdir / f"{method}_s{seed}"
      if (run_dir / "export" / DONE).exists():
        continue
      c = load_config(f"configs/{task}_{method}.py")
      sets = [("seed", str(seed))]
      if method != "student_finetune":
        sets += [("teacher.source", str(teacher / "export")), ("teacher.finetune", "False")]
      apply_overrides(c, sets)
      run_pipeline(c, run_dir)


def collect(task: str, workdir: Path, out: Path) -> int:
  """Writes results/<task>/<method>_seed<k>.json for every finished run; returns how many."""
  n, commit = 0, _commit()
  for method, _ in STUDIES[task]:
    dirs = [workdir / "teacher"] if method == "teacher" else sorted(workdir.glob(f"{method}_s*"))
    for d in dirs:
      done = d / "export" / DONE
      if not done.is_file():
        continue
      s, cfg = json.loads(done.read_text()), json.loads((d / "config.json").read_text())
      path = out / task / f"{method}_seed{cfg['seed']}.json"
      if path.is_file() and json.loads(path.read_text()).get("done_mtime") == done.stat().st_mtime:
        continue  # already collected (keeps the commit of the run that made it)
      record = {"task": task, "method": method, "seed": cfg["seed"], "commit": commit,
                "cpu": _cpu(), "metrics": s["student"], "params": s["student_params"],
                "wall_seconds": round(s["train_seconds"], 1), "done_mtime": done.stat().st_mtime,
                "config": cfg}
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
      n += 1
  return n


def load(task: str, out: Path) -> dict:
  found: dict = {}
  for f in sorted((out / task).glob("*.json")):
    r = json.loads(f.read_text())
    found.setdefault(r["method"], []).append(r)
  return found


def render(task: str, found: dict) -> str:
  """Mean ± std over seeds of test and dev F1, and each method's per-seed paired difference
  to the no-teacher student of the same seed (same test examples)."""
  if not found:
    raise ValueError(f"no result files for {task!r}; run python -m jaxdistill.results --task {task}")
  second = SECOND[task]
  head = ("| model | seeds | test F1 | " + " | ".join(f"test {m}" for m in second)
          + " | dev F1 | paired test F1 − no teacher (per seed) |")
  lines = [head, "|" + "---|" * (5 + len(second))]
  base = {r["seed"]: r["metrics"]["test"]["f1"] for r in found.get("student_finetune", [])}

  def stat(values) -> str:
    a = 100 * np.asarray(values, float)
    return f"{a.mean():.2f}" + (f" ± {a.std(ddof=1):.2f}" if len(a) > 1 else "")

  for method, label in STUDIES[task]:
    recs = sorted(found.get(method, []), key=lambda r: r["seed"])
    if not recs:
      continue
    cols = [stat([r["metrics"]["test"]["f1"] for r in recs])]
    cols += [stat([r["metrics"]["test"][m] for r in recs]) for m in second]
    cols.append(stat([r["metrics"]["dev"]["f1"] for r in recs]))
    diffs = [100 * (r["metrics"]["test"]["f1"] - base[r["seed"]]) for r in recs
             if method not in ("teacher", "student_finetune") and r["seed"] in base]
    cols.append(f"{np.mean(diffs):+.2f} ({', '.join(f'{d:+.2f}' for d in diffs)})" if diffs else "")
    lines.append(f"| {label} | {len(recs)} | " + " | ".join(cols) + " |")
  any_rec = next(iter(found.values()))[0]
  test_n = ("first 500 questions of the official SQuAD v1.1 dev set" if task == "squad"
            else "the 239 test tweets of the fixed WNUT-2016 split")
  commits = sorted({r["commit"] for rs in found.values() for r in rs})
  lines += ["", f"Test set: {test_n}. F1 in points (entity-level for NER, the official SQuAD "
            f"F1 for QA); mean ± sample std over seeds. Runs made at commit(s) {', '.join(commits)} "
            f"on {any_rec['cpu']}; files: results/{task}/."]
  return "\n".join(lines)


def update_readme(readme: Path, task: str, table: str) -> None:
  begin, end = f"<!-- RESULTS:{task}:BEGIN -->", f"<!-- RESULTS:{task}:END -->"
  text = readme.read_text()
  if begin not in text or end not in text:
    raise ValueError(f"{readme} has no {begin} ... {end} markers to put the table between")
  head, rest = text.split(begin, 1)
  readme.write_text(f"{head}{begin}\n{table}\n{end}{rest.split(end, 1)[1]}")


def main(task: str, workdir: str, seeds: list[int], readme: str, render_only: bool,
         results_dir: str = "results") -> str:
  wd, out = Path(workdir or f"runs/{task}"), Path(results_dir)
  if not render_only:
    train(task, wd, seeds)
  if wd.is_dir():
    collect(task, wd, out)
  table = render(task, load(task, out))
  if readme:
    update_readme(Path(readme), task, table)
  return table
