"""Collects the NER and SQuAD runs of scripts/token_span_results.sh into results/token_span/
(one small JSON per run: config, commit, seed, metrics, wall time, cpu) and prints the
README rows from those files (so they re-render without retraining) (mean ± std over seeds; the paired per-seed difference to the no-teacher student).

  python scripts/collect_token_span.py [--commit abc1234]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
from pathlib import Path

import numpy as np

ROWS = {"ner": [("teacher", "6-layer MiniLM teacher (fine-tuned)"),
                ("student_finetune", "3-layer student, no teacher"),
                ("kd", "Hinton KD (per-token)"), ("pkd", "BERT-PKD (skip) + KD")],
        "squad": [("teacher", "6-layer MiniLM teacher (fine-tuned)"),
                  ("student_finetune", "3-layer student, no teacher"),
                  ("kd", "Hinton KD (start/end)")]}


def cpu() -> str:
  out = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout
  return out.split(":", 1)[-1].strip() or platform.processor()


def collect(root: Path, out: Path, commit: str) -> dict:
  found = {}
  for task, rows in ROWS.items():
    for method, _ in rows:
      dirs = [root / task / "teacher"] if method == "teacher" else sorted((root / task).glob(f"{method}_s*"))
      for d in dirs:
        done = d / "export" / "DONE"
        if not done.is_file():
          continue
        s = json.loads(done.read_text())
        cfg = json.loads((d / "config.json").read_text())
        rec = {"task": task, "method": method, "seed": cfg["seed"], "commit": commit, "cpu": cpu(),
               "metrics": s["student"], "params": s["student_params"],
               "wall_seconds": round(s["train_seconds"], 1), "config": cfg}
        path = out / task / f"{method}_seed{cfg['seed']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rec, indent=1, sort_keys=True) + "\n")
        found.setdefault(task, {}).setdefault(method, []).append(rec)
  return found


def table(found: dict) -> str:
  lines = []
  for task, rows in ROWS.items():
    if task not in found:
      continue
    second = "exact_match" if task == "squad" else "precision"
    lines += [f"**{task}**", "", "| model | seeds | test F1 (mean ± std) | dev F1 | paired Δ test F1 vs no teacher |",
              "|---|---|---|---|---|"]
    base = {r["seed"]: r["metrics"]["test"]["f1"] for r in found[task].get("student_finetune", [])}
    for method, label in rows:
      recs = found[task].get(method)
      if not recs:
        continue
      t = np.array([r["metrics"]["test"]["f1"] for r in recs]) * 100
      d = np.array([r["metrics"]["dev"]["f1"] for r in recs]) * 100
      sd = lambda a: f" ± {a.std(ddof=1):.2f}" if len(a) > 1 else ""
      diffs = [100 * (r["metrics"]["test"]["f1"] - base[r["seed"]]) for r in recs
               if method not in ("teacher", "student_finetune") and r["seed"] in base]
      delta = (f"{np.mean(diffs):+.2f} ({', '.join(f'{x:+.2f}' for x in diffs)})" if diffs else "")
      lines.append(f"| {label} | {len(recs)} | {t.mean():.2f}{sd(t)} | {d.mean():.2f}{sd(d)} | {delta} |")
    lines.append("")
  return "\n".join(lines)


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--runs", default="runs")
  ap.add_argument("--out", default="results/token_span")
  ap.add_argument("--commit", default="")
  a = ap.parse_args()
  commit = a.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                      text=True).stdout.strip()
  if Path(a.runs).is_dir():  # a later machine without runs/ re-renders from the JSON alone
    collect(Path(a.runs), Path(a.out), commit)
  found = {}
  for f in sorted(Path(a.out).glob("*/*.json")):
    r = json.loads(f.read_text())
    found.setdefault(r["task"], {}).setdefault(r["method"], []).append(r)
  print(table(found))


if __name__ == "__main__":
  main()
