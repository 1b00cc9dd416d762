"""The README's NER and SQuAD rows: `python -m jaxdistill.results --task ner|squad`.

    python -m jaxdistill.results --task ner --seeds 0,1,2      # trains what is missing, then renders
    python -m jaxdistill.results --task squad --seeds 3 --render-only   # seeds 0, 1, 2

One teacher per task (configs/<task>_finetune.py in <workdir>/teacher), then every student
method over the seeds, each reading that same teacher's export (runs/<task>/<method>_s<seed>,
resumable like any run). Each finished run becomes one small JSON file under
results/<task>/ (config, commit, seed, metrics, wall time, CPU, and its per-example test
scores), and the table is rendered from those files alone, so a later machine without runs/
re-renders or extends it.

Per-example test scores, what the paired bootstrap CI of the table resamples (jaxdistill/stats.py):
  ner    "per_sentence_test": [[true positives, predicted, gold entities], ...] per test sentence
  squad  "per_question_test": {"f1": [...], "exact_match": [...]} per test question (F1 to 4 decimals)
and "test_key", a fingerprint of the test set (its sentences / question ids, in order), so
only runs scored on the same examples are paired. They come from the run's
predictions_test.json (the trainer writes it; `predict_test` below, or
scripts/predict_token_span.py, makes it for an older run from its export) and the run's own
test split, and must reproduce the run's logged test F1 to 1e-6.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from pathlib import Path

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding

from jaxdistill import data as data_lib
from jaxdistill import stats
from jaxdistill.config_lib import apply_overrides, load_config
from jaxdistill.data import ner, token_span_tasks
from jaxdistill.data.errors import DataError
from jaxdistill.data.squad_metric import exact_match_score, f1_score, max_over_ground_truths
from jaxdistill.models.hub import load_pretrained, load_tokenizer
from jaxdistill.pipeline import run as run_pipeline
from jaxdistill.train import sharding
from jaxdistill.train.evaluate import evaluate
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
PER_EXAMPLE = {"ner": "per_sentence_test", "squad": "per_question_test"}
BASELINE = "student_finetune"
PREDICTIONS = "predictions_test.json"
TOLERANCE = 1e-6  # per-example scores vs the run's logged test metric


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


# ---- Per-example test scores of one finished run ------------------------------------------
def _config(run_dir: Path) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(json.loads((Path(run_dir) / "config.json").read_text()))


def _logged_test(run_dir: Path) -> dict:
  return json.loads((Path(run_dir) / "export" / DONE).read_text())["student"]["test"]


def _load_task(run_dir: Path):
  """The run's task, rebuilt from its config.json with its export's tokenizer (token and
  span tasks are never cached on disk, so nothing is written)."""
  return data_lib.load_task(_config(run_dir).data, load_tokenizer(str(Path(run_dir) / "export")))


def predict_test(run_dir) -> dict:
  """Writes <run_dir>/predictions_test.json from the run's export, as the trainer writes it at
  the end of a run, and returns the test metrics, checked against the logged ones."""
  run_dir = Path(run_dir)
  cfg, task = _config(run_dir), _load_task(run_dir)
  model, _ = load_pretrained(str(run_dir / "export"))
  graph, params = nnx.split(model)
  predict = jax.jit(lambda p, b: nnx.merge(graph, p)(b["input_ids"], b["attention_mask"], b["token_type_ids"]).logits)
  batch_sharding = NamedSharding(sharding.make_mesh(cfg), sharding.BATCH)
  got = evaluate(predict, params, task, "test", cfg, batch_sharding, predictions_path=run_dir / PREDICTIONS)
  want = _logged_test(run_dir)["f1"]
  if abs(got["f1"] - want) > TOLERANCE:
    raise DataError(f"{run_dir}: its export scores test F1 {got['f1']:.6f}, the run logged {want:.6f}; "
                    f"{PREDICTIONS} is not what the run evaluated (another config, data or export?)")
  return got


def _key(items) -> str:
  return hashlib.sha1("\n".join(items).encode("utf-8")).hexdigest()[:12]


def ner_counts(gold_tags, pred_tags) -> np.ndarray:
  """[n_sentences, 3] int: (true positive, predicted, gold) entities per sentence, chunked as
  ner.ner_metrics chunks them; summed, 2 tp / (pred + gold) is its micro F1."""
  if len(gold_tags) != len(pred_tags):
    raise DataError(f"{len(pred_tags)} predicted sentences for {len(gold_tags)} gold ones")
  rows = []
  for s, (gold, pred) in enumerate(zip(gold_tags, pred_tags)):
    if len(gold) != len(pred):
      raise DataError(f"sentence {s}: {len(pred)} predicted tags for {len(gold)} words")
    g, p = set(ner.entities(gold)), set(ner.entities(pred))
    rows.append((len(g & p), len(p), len(g)))
  return np.asarray(rows, np.int64).reshape(-1, 3)


def squad_scores(examples, predictions: dict) -> dict[str, np.ndarray]:
  """Per question (in `examples` order): F1 and EM against its best gold answer, 0 without a
  prediction, as the official script scores them; their means are the SQuAD F1 and EM."""
  f1 = [max_over_ground_truths(f1_score, predictions[e.id], e.answers) if e.id in predictions else 0.0
        for e in examples]
  em = [max_over_ground_truths(exact_match_score, predictions[e.id], e.answers) if e.id in predictions else 0.0
        for e in examples]
  return {"f1": np.asarray(f1, np.float64), "exact_match": np.asarray(em, np.float64)}


def _check(run_dir, name: str, got: float, logged: dict) -> None:
  if abs(got - logged[name]) > TOLERANCE:
    raise DataError(f"{run_dir}: {PREDICTIONS} scores test {name} {got:.6f}, the run logged "
                    f"{logged[name]:.6f}; delete the file and rerun scripts/predict_token_span.py {run_dir}")


def per_example(task: str, run_dir, gold_cache: dict | None = None) -> dict:
  """The result file's per-example keys for one finished run (module docs). Its predictions
  file is made from the export first when the run predates it. `gold_cache`: test sets
  already read, by data config (one read for every run of a study)."""
  run_dir, cache = Path(run_dir), {} if gold_cache is None else gold_cache
  if not (run_dir / PREDICTIONS).is_file():
    predict_test(run_dir)
  predictions, logged = json.loads((run_dir / PREDICTIONS).read_text()), _logged_test(run_dir)
  data_cfg = _config(run_dir).data
  at = json.dumps(data_cfg.to_dict(), sort_keys=True)
  if task == "ner":
    if at not in cache:
      cache[at] = _load_task(run_dir).meta["test"]
    meta = cache[at]
    try:
      counts = ner_counts(meta.tags, predictions)
    except DataError as e:
      raise DataError(f"{run_dir / PREDICTIONS}: {e}; it is not this run's test split (delete it, rerun "
                      f"scripts/predict_token_span.py {run_dir})") from None
    _check(run_dir, "f1", float(stats.micro_f1(counts.sum(axis=0))), logged)
    return {PER_EXAMPLE[task]: counts.tolist(), "test_key": _key(" ".join(w) for w in meta.words)}
  if at not in cache:  # the references only: no tokenising of the train split's windows
    # The same test examples load_task would build, as tests/test_token_span_training.py reads them.
    cache[at] = token_span_tasks._squad_sources(data_lib.parse_data_config(data_cfg))["test"]
  examples = cache[at]
  scores = squad_scores(examples, predictions)
  for name in ("f1", "exact_match"):
    _check(run_dir, name, float(scores[name].mean()), logged)
  return {PER_EXAMPLE[task]: {"f1": [round(float(x), 4) for x in scores["f1"]],
                              "exact_match": [int(x) for x in scores["exact_match"]]},
          "test_key": _key(e.id for e in examples)}


def collect(task: str, workdir: Path, out: Path) -> int:
  """Writes results/<task>/<method>_seed<k>.json for every finished run; returns how many.
  A file already collected from this very run keeps its commit and CPU, and gains its
  per-example scores if it lacks them."""
  n, commit, gold = 0, _commit(), {}
  for method, _ in STUDIES[task]:
    dirs = [workdir / "teacher"] if method == "teacher" else sorted(workdir.glob(f"{method}_s*"))
    for d in dirs:
      done = d / "export" / DONE
      if not done.is_file():
        continue
      s, cfg = json.loads(done.read_text()), json.loads((d / "config.json").read_text())
      path = out / task / f"{method}_seed{cfg['seed']}.json"
      old = json.loads(path.read_text()) if path.is_file() else {}
      same = old.get("done_mtime") == done.stat().st_mtime
      if same and PER_EXAMPLE[task] in old:
        continue  # already collected (keeps the commit of the run that made it)
      record = {"task": task, "method": method, "seed": cfg["seed"], "commit": old["commit"] if same else commit,
                "cpu": old["cpu"] if same else _cpu(), "metrics": s["student"], "params": s["student_params"],
                "wall_seconds": round(s["train_seconds"], 1), "done_mtime": done.stat().st_mtime,
                "config": cfg, **per_example(task, d, gold)}
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text(dumps(record))
      n += 1
  return n


def dumps(record: dict) -> str:
  """The result file's text: indented like the other result files, except the per-example
  scores, which stay on one line each (not one line per number) so that a file stays small
  and a diff of it readable."""
  slot = "@@per-example@@"
  flat = {k: slot if k in PER_EXAMPLE.values() else v for k, v in record.items()}
  text = json.dumps(flat, indent=1, sort_keys=True)
  for key in (k for k in PER_EXAMPLE.values() if k in record):
    one_line = json.dumps(record[key], separators=(",", ":"), sort_keys=True)
    text = text.replace(f'"{key}": "{slot}"', f'"{key}": {one_line}', 1)
  return text + "\n"


def load(task: str, out: Path) -> dict:
  found: dict = {}
  for f in sorted((out / task).glob("*.json")):
    r = json.loads(f.read_text())
    found.setdefault(r["method"], []).append(r)
  return found


# ---- The table ---------------------------------------------------------------------------
def _points(x: float) -> str:
  return f"{100 * x:+.1f}".replace("-", "\u2212")


def _scores(task: str, r: dict):
  """The run's per-example test scores for the bootstrap, or None (a file without them)."""
  if PER_EXAMPLE[task] not in r:
    return None
  return np.asarray(r["per_sentence_test"] if task == "ner" else r["per_question_test"]["f1"])


def paired_ci_cell(task: str, recs: list, base: list, n_boot: int = 10000, alpha: float = 0.05) -> str:
  """"+2.3 [−0.5, +5.1]" (points; " *" when the interval excludes 0): test F1 of `recs` minus
  the no-teacher runs `base`, seed i paired with seed i; a single teacher run is paired with
  every baseline seed."""
  by_seed, base_seed = {r["seed"]: r for r in recs}, {r["seed"]: r for r in base}
  shared = recs[0]["method"] == "teacher"
  seeds = sorted(base_seed) if shared else sorted(set(by_seed) & set(base_seed))
  pairs = [(recs[0] if shared else by_seed[s], base_seed[s]) for s in seeds]
  if not pairs or any(_scores(task, r) is None for p in pairs for r in p):
    return "n/a"
  keys = {r.get("test_key") for p in pairs for r in p}
  if len(keys) != 1:
    raise DataError(f"{task}: {recs[0]['method']} and {BASELINE} were scored on different test sets "
                    f"(test_key {sorted(map(str, keys))}); collect every run of the study from one config")
  a, b = (np.stack([_scores(task, p[i]) for p in pairs]) for i in (0, 1))
  ci = stats.paired_bootstrap_ci_f1 if task == "ner" else stats.paired_bootstrap_ci_scores
  diff, lo, hi = ci(a, b, n_boot=n_boot, alpha=alpha)
  return f"{_points(diff)} [{_points(lo)}, {_points(hi)}]" + (" *" if stats.excludes_zero(lo, hi) else "")


def render(task: str, found: dict, n_boot: int = 10000) -> str:
  """Mean ± std over seeds of test and dev F1, each method's per-seed paired difference to
  the no-teacher student of the same seed (same test examples), and the paired bootstrap CI
  of that difference over test examples."""
  if not found:
    raise ValueError(f"no result files for {task!r}; run python -m jaxdistill.results --task {task}")
  second = SECOND[task]
  head = ("| model | seeds | test F1 | " + " | ".join(f"test {m}" for m in second)
          + " | dev F1 | paired test F1 − no teacher (per seed) | paired Δ vs no teacher, 95% CI |")
  lines = [head, "|" + "---|" * (6 + len(second))]
  base_recs = found.get(BASELINE, [])
  base = {r["seed"]: r["metrics"]["test"]["f1"] for r in base_recs}

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
             if method not in ("teacher", BASELINE) and r["seed"] in base]
    cols.append(f"{np.mean(diffs):+.2f} ({', '.join(f'{d:+.2f}' for d in diffs)})" if diffs else "")
    cols.append("baseline" if method == BASELINE else paired_ci_cell(task, recs, base_recs, n_boot)
                if base_recs else "n/a")
    lines.append(f"| {label} | {len(recs)} | " + " | ".join(cols) + " |")
  any_rec = next(iter(found.values()))[0]
  test_n = ("first 500 questions of the official SQuAD v1.1 dev set" if task == "squad"
            else "the 239 test tweets of the fixed WNUT-2016 split")
  what = ("entity-level micro F1 recomputed per resample from the resampled tweets' true-positive, "
          "predicted and gold entity counts" if task == "ner" else
          "the mean of the resampled questions' official F1")
  commits = sorted({r["commit"] for rs in found.values() for r in rs})
  lines += ["", f"Test set: {test_n}. F1 in points (entity-level for NER, the official SQuAD "
            f"F1 for QA); mean ± sample std over seeds. Runs made at commit(s) {', '.join(commits)} "
            f"on {any_rec['cpu']}; files: results/{task}/.",
            "", f"Paired Δ: test F1 minus the no-teacher student's, seed i paired with seed i (the one "
            f"teacher run with every seed), averaged over the paired seeds, with a percentile 95% CI from "
            f"{n_boot:,} bootstrap resamples of the test {'tweets' if task == 'ner' else 'questions'} (the "
            f"same indices for both models and every seed; {what}); * = the CI excludes 0."]
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
