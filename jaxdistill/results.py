"""The README's Rotten Tomatoes results: every method over K seeds, each paired with the
no-teacher student on the same seeds and test reviews.

    python -m jaxdistill.results                             # setting l3, seeds 0,1,2 (trains what is missing)
    python -m jaxdistill.results --setting l1 --seeds 5      # the 1-layer setting, seeds 0..4
    python -m jaxdistill.results --study theseus_rate1       # one experiment of STUDIES
    python -m jaxdistill.results --study lad_w3 --methods lad --set losses.lad=3   # an ad-hoc one
    python -m jaxdistill.results --setting l3 --render-only  # re-render from results/ alone

The teacher (configs/finetune.py with train.epochs=3, best dev checkpoint kept) trains once
in <workdir>/teacher; every student of every study reads it. A student run is
<workdir>/<study>/<method>_s<seed>, resumable like any run. Each finished run becomes
results/rotten_tomatoes/<study>/<method>_seed<k>.json (jaxdistill/results_store.py: config,
commit, seed, dev and test metrics, each test prediction's 0/1 correctness, wall time,
machine, dev curve); the table is rendered from those files alone (`--render-only`).

Settings: overrides applied to every method of a study, after its config file.
  l3  3-layer students: BERT ones from teacher layers (0, 2, 4) as the configs have them
      (Theseus' successor from (0, 1, 2), the authors' choice). Every method.
  l1  1-layer students from teacher layer 0 (student.layers=(0,)): harder, so the no-teacher
      student has more to gain from a teacher. The methods whose student is cut from teacher
      layers and works with one (PKD needs layers below the top one, DistilBERT sets its
      layers in its stages, the others are other architectures).

Studies: the settings and the separating experiments of docs/results.md (STUDIES). One
without no-teacher runs of its own is compared with its setting's (same seeds, test reviews
and baseline config). `--set`, `--teacher-set` and `--variant` make an ad-hoc study, which
needs a new name (`--study NAME`) so its files never mix with a named study's. "@teacher" in
a value is the teacher's export. `--task ner|squad`: jaxdistill/results_token_span.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding

from jaxdistill import data as data_lib
from jaxdistill import host_memory, results_store, run_dir
from jaxdistill.config_lib import apply_overrides, load_config
from jaxdistill.core.errors import ConfigError
from jaxdistill.data.errors import DataError
from jaxdistill.models.hub import load_pretrained, load_tokenizer
from jaxdistill.pipeline import run as run_pipeline
from jaxdistill.report import compare_latency
from jaxdistill.train import sharding
from jaxdistill.train.__main__ import enable_compilation_cache, setup_logging
from jaxdistill.train.evaluate import predict_split
from jaxdistill.train.loop import DONE, cache_root

log = logging.getLogger(__name__)
TASK, BASELINE, TEACHER = "rotten_tomatoes", "student_finetune", "teacher"
TEACHER_CONFIG, TEACHER_SETS = "configs/finetune.py", (("train.epochs", "3"),)
METHODS = {  # (row label, config); the teacher's row comes from TEACHER_CONFIG
    "student_finetune": ("student fine-tuned without a teacher", "configs/student_finetune.py"),
    "kd": ("Hinton KD", "configs/kd.py"),
    "pkd": ("BERT-PKD (skip)", "configs/pkd.py"),
    "theseus": ("BERT-of-Theseus", "configs/theseus.py"),
    "lad": ("LAD", "configs/lad.py"),
    "distilbert": ("DistilBERT (general distillation, then fine-tuning)", "configs/distilbert.py"),
    "tinybert": ("TinyBERT (4 layers x 192, augmented data)", "configs/tinybert.py"),
    "mobilebert": ("MobileBERT (bottleneck, progressive transfer)", "configs/mobilebert.py"),
    "minilm": ("MiniLM v1", "configs/minilm.py"),
    "minilm_v2": ("MiniLMv2 (3 layers x 192, 6 heads)", "configs/minilm_v2.py"),
    "minilm_ta": ("MiniLMv2 via a teacher assistant", "configs/minilm_ta.py"),
    "bilstm": ("distilled BiLSTM", "configs/bilstm.py"),
}
LABELS = {TEACHER: "6-layer MiniLM teacher (fine-tuned)", **{m: v[0] for m, v in METHODS.items()}}


@dataclasses.dataclass(frozen=True)
class Study:
  setting: str
  methods: tuple = ()  # () = every method of the setting
  sets: tuple = ()     # ((dotted key, text as on the command line), ...) for every method
  doc: str = ""
  compare: tuple = ()  # methods of the setting shown beside the study's rows


SETTINGS = {
    "l3": Study("l3", tuple(METHODS), (), "3-layer students (BERT ones from teacher layers 0, 2, 4)"),
    "l1": Study("l1", ("student_finetune", "kd", "theseus", "lad", "minilm"),
                (("student.layers", "0,"),), "1-layer students from teacher layer 0"),
}


def _pkd(name: str, key: str, text: str) -> tuple[str, Study]:  # one point of the authors' grid
  return f"pkd_{name}", Study("l3", ("pkd",), ((key, text),), f"PKD with {key}={text}")


# The separating experiments of docs/results.md; one command each: --study NAME.
STUDIES = {
    **SETTINGS,
    "theseus_rate1": Study("l3", ("theseus",), (("theseus.scheduler", "constant"), ("theseus.rate", "1.0")),
                           "Theseus at a constant p = 1: the successor alone from step 0, no replacing"),
    "theseus_init135": Study("l3", ("theseus",), (("student.layers", "1,3,5"),),
                             "Theseus' successor started from teacher layers 1, 3, 5 instead of 0, 1, 2"),
    "baseline_theseus_start": Study(
        "l3", ("student_finetune",), (("student.source", "@teacher"), ("student.layers", "0,1,2")),
        "the no-teacher student started where Theseus' successor starts: the fine-tuned teacher's "
        "layers 0, 1, 2 with its embeddings and classifier", compare=("theseus",)),
    "theseus_authors": Study("l3", ("theseus",), (
        ("optim.lr", "2e-5"), ("optim.warmup_ratio", "0.0"), ("optim.weight_decay", "0.0"),
        ("theseus.scheduler", "linear"), ("theseus.rate", "0.1"), ("theseus.linear_k", "6e-4"),
        ("theseus.finetune_epochs", "0"), ("train.epochs", "6")),
        "Theseus with the authors' curriculum (b = 0.1, k = 6e-4: p = 1 from step 1,500) in one run "
        "of 6 epochs, the successor trained alone at p = 1 for the last 420 steps"),
    **{f"lad_w{w}": Study("l3", ("lad",), (("losses.lad", f"{float(w)}"),), f"LAD with losses.lad={w} (l3: 1000)")
       for w in (0, 1, 10, 100)},
    "lad_authors_budget": Study("l3", ("lad",), (("train.epochs", "20"), ("optim.warmup_ratio", "0.3")),
                                "LAD with the authors' 20 epochs and 30% warmup"),
    "lad_init135": Study("l3", ("lad",), (("student.layers", "1,3,5"),), "LAD's student from teacher layers 1, 3, 5"),
    "lad_padded": Study("l3", ("lad",), (("lad.average_over", "padded"), ("train.bucket_multiple", "64")),
                        "LAD's MSE averaged over every position of batches padded to 64, as the authors"),
    "lad_gate1": Study("l3", ("lad",), (("lad.gate", "one"),), "LAD with every gate fixed at g = 1 (control)"),
    "lad_authors": Study("l3", ("lad",), (
        ("train.epochs", "20"), ("optim.warmup_ratio", "0.3"), ("student.layers", "1,3,5"),
        ("lad.average_over", "padded"), ("train.bucket_multiple", "64")), "LAD with all of the authors' settings above"),
    "pkd_authors_budget": Study("l3", ("pkd",), (("train.epochs", "4"),), "PKD with the authors' 4 epochs"),
    **dict(_pkd(n, k, v) for n, k, v in (
        ("T5", "kd.temperature", "5"), ("T20", "kd.temperature", "20"), ("lr2e-5", "optim.lr", "2e-5"),
        ("beta10", "losses.pkd", f"{10 / 768}"), ("beta500", "losses.pkd", f"{500 / 768}"))),
    **{f"pkd_alpha{a}": Study("l3", ("pkd",), (("losses.kd", f"{a}"), ("losses.hard_ce", f"{1 - a:.1f}")),
                              f"PKD with alpha = {a} (losses.kd; hard_ce = 1 - alpha)") for a in (0.2, 0.7)},
}


def parse_seeds(text: str) -> list[int]:
  """"5" = seeds 0..4; "0,1,2" (or "3," for seed 3 alone) = those seeds."""
  try:
    parts = [int(p) for p in text.split(",") if p.strip()]
  except ValueError:
    parts = []
  if not parts or min(parts) < 0 or ("," not in text and parts[0] < 1):
    raise ConfigError(f"--seeds={text!r}: give a count (5 = seeds 0..4) or a list (0,1,2; seed 3 alone: 3,)")
  return list(range(parts[0])) if "," not in text else sorted(set(parts))


def resolve(study: str, setting: str, methods: str, adhoc: bool, render_only: bool = False
            ) -> tuple[Study, list[str]]:
  """The study to run or render (a named one, or an ad-hoc one under `setting`) and its methods."""
  if study in STUDIES:
    spec = STUDIES[study]
    if adhoc:
      raise ConfigError(f"--set/--teacher-set/--variant change the runs; name a new study "
                        f"(--study my_{study}) so that results/{TASK}/{study} keeps only {study}'s runs")
    if setting and setting != spec.setting:
      raise ConfigError(f"study {study!r} runs in setting {spec.setting!r}; drop --setting={setting}")
  else:
    if not (adhoc or render_only):
      raise ConfigError(f"unknown study {study!r}; known: {', '.join(STUDIES)} (or pass --set to run an ad-hoc one)")
    spec = Study(setting or "l3")
  allowed = STUDIES[spec.setting].methods
  chosen = [m for m in methods.split(",") if m] if methods is not None else list(spec.methods or allowed)
  bad = [m for m in chosen if m not in allowed]
  if bad:
    raise ConfigError(f"method(s) {bad} are not part of setting {spec.setting!r}; choose from {', '.join(allowed)}")
  return spec, chosen


def teacher_config(variant: str = "", sets=()) -> ml_collections.ConfigDict:
  c = load_config(TEACHER_CONFIG + (f":{variant}" if variant else ""))
  apply_overrides(c, list(TEACHER_SETS) + list(sets))
  return c


def method_config(method: str, spec: Study, seed: int, teacher_dir: Path, variant: str = "",
                  sets=()) -> ml_collections.ConfigDict:
  """The method's config file, then the setting's, the study's and the command line's
  overrides; the shared teacher; the seed; no compression report (collect measures latency,
  once per method, the same way for every row)."""
  c = load_config(METHODS[method][1] + (f":{variant}" if variant else ""))
  items = [*STUDIES[spec.setting].sets, *spec.sets, *sets]
  items = [(k, str(teacher_dir / "export") if v == "@teacher" else v) for k, v in items]
  apply_overrides(c, items + [("seed", str(seed)), ("teacher.workdir", str(teacher_dir)),
                              ("report.compression", "false")])
  return c


def ensure_trained(config, workdir: Path) -> None:
  """Trains `workdir` unless it holds this config finished (another one there: a ConfigError)."""
  if run_dir.finished_report(config, workdir) is None:
    run_pipeline(config, workdir)


# ---- One finished run -> one result file ----------------------------------------------------
def _machine() -> str:
  info = Path("/proc/cpuinfo")
  names = [l.split(":", 1)[1].strip() for l in (info.read_text().splitlines() if info.is_file() else [])
           if l.startswith("model name")] or [platform.processor() or "unknown CPU"]
  return f"{names[0]} ({os.cpu_count()} cores), {jax.devices()[0].device_kind}"


def per_example_correct(workdir: Path) -> np.ndarray:
  """[n_test] 0/1: the run's export on the test split, batched as the run evaluated it."""
  cfg = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  model, _ = load_pretrained(str(workdir / "export"))
  tokenizer = load_tokenizer(str(workdir / "export"))
  task = data_lib.load_task(cfg.data, tokenizer, cache_dir=cfg.get("cache_dir") or os.path.join(cache_root(), "data"))
  graph, params = nnx.split(model)
  predict = jax.jit(lambda p, b: nnx.merge(graph, p)(b["input_ids"], b["attention_mask"], b["token_type_ids"]).logits)
  batch_sharding = NamedSharding(sharding.make_mesh(cfg), sharding.BATCH)
  logits, labels = predict_split(predict, params, task, "test", cfg, batch_sharding)
  return (np.argmax(logits, axis=-1) == labels).astype(np.int8)


def measure_latency(teacher_export: Path, student_export: Path, shape: tuple, iters: int) -> dict:
  """The teacher's median latency over the student's on [batch, length] = shape, interleaved."""
  ids = jnp.asarray(np.random.default_rng(0).integers(1000, 2000, size=tuple(shape)), jnp.int32)

  def jitted(path):
    graph, params = nnx.split(load_pretrained(str(path))[0])
    f = jax.jit(lambda p, i, m: nnx.merge(graph, p)(i, m).logits)
    return lambda: f(params, ids, jnp.ones_like(ids))

  lat = compare_latency(jitted(teacher_export), jitted(student_export), iters=iters)
  return {"speedup": lat["speedup"], "batch": int(shape[0]), "length": int(shape[1]), "iters": iters,
          "device": jax.devices()[0].device_kind, "teacher_s": lat["teacher_s"], "student_s": lat["student_s"]}


_latency = measure_latency  # its earlier name, which tests/test_bilstm.py imports


def collect(method: str, seed: int, workdir: Path, out_dir: Path, *, teacher_dir: Path,
            study: str, latency_iters: int = 0) -> Path | None:
  """Writes out_dir/<method>_seed<k>.json for the finished run in `workdir` (None if not
  finished). A file written from this very run is kept (so is the commit that made it),
  unless it lacks a latency this call should measure."""
  done = workdir / "export" / DONE
  if not done.is_file():
    return None
  path, mtime = results_store.result_path(out_dir, ".", method, seed), done.stat().st_mtime
  old = json.loads(path.read_text()) if path.is_file() else {}
  same = old.get("done_mtime") == mtime  # written from this very run: keep its commit and machine
  want_latency = latency_iters > 0 and method != TEACHER and "latency" not in old
  if same and not want_latency:
    return path
  summary = json.loads(done.read_text())
  correct = per_example_correct(workdir)
  metrics = {s: dict(m) for s, m in summary["student"].items()}
  if abs(metrics["test"]["accuracy"] - correct.mean()) > 1e-9:  # a different test set or model
    log.warning("%s: the export scores %.6f on test, the run logged %.6f; the file keeps the export's "
                "(its per-example record) and the run's as accuracy_in_run", workdir, correct.mean(),
                metrics["test"]["accuracy"])
    metrics["test"]["accuracy_in_run"], metrics["test"]["accuracy"] = metrics["test"]["accuracy"], float(correct.mean())
  # A multi-stage run's earlier stages trained in <run>/<stage>; their time counts too.
  wall = summary["train_seconds"] + sum(json.loads(d.read_text())["train_seconds"]
                                        for d in workdir.glob(f"*/export/{DONE}"))
  extra = {"study": study, "done_mtime": mtime, "run_dir": str(workdir),
           "dev_curve": results_store.dev_curve(workdir / "metrics.jsonl")}
  if method != TEACHER and (want_latency or "latency" in old):
    length = int(json.loads((workdir / "config.json").read_text())["data"]["max_length"])
    extra["latency"] = old.get("latency") or measure_latency(teacher_dir / "export", workdir / "export",
                                                             (32, length), latency_iters)
  return results_store.write_result(
      path, config=json.loads((workdir / run_dir.RUN_CONFIG).read_text()),
      commit=old["commit"] if same else results_store.git_commit(), seed=seed, method=method,
      task=summary.get("task", TASK), metrics=metrics, wall_seconds=wall, cpu=old["cpu"] if same else _machine(),
      per_example_correct_test=correct, params=int(summary["student_params"]), extra=extra)


# ---- The study ------------------------------------------------------------------------------
def run_study(study: str, spec: Study, methods: list[str], seeds: list[int], workdir: Path,
              results_dir: Path, *, variant: str = "", sets=(), teacher_sets=(), latency_iters: int = 20) -> None:
  """Trains what is missing (the teacher first) and collects each selected run into
  results_dir/rotten_tomatoes/<study>/ as soon as it has finished. Latency is measured once
  per method (the first run collected without another seed's measurement)."""
  teacher_dir, out = workdir / "teacher", results_dir / TASK / study
  tcfg = teacher_config(variant, teacher_sets)
  ensure_trained(tcfg, teacher_dir)
  collect(TEACHER, int(tcfg.seed), teacher_dir, out, teacher_dir=teacher_dir, study=study)
  for seed in seeds:
    for method in methods:
      run = workdir / study / f"{method}_s{seed}"
      ensure_trained(method_config(method, spec, seed, teacher_dir, variant, sets), run)
      measured = any("latency" in json.loads(f.read_text()) for f in out.glob(f"{method}_seed*.json")
                     if f.name != f"{method}_seed{seed}.json")  # once per method is enough
      collect(method, seed, run, out, teacher_dir=teacher_dir, study=study,
              latency_iters=0 if measured else latency_iters)


def render(study: str, spec: Study, results_dir: Path, n_boot: int = 10000) -> str:
  """The study's table from its files. A study other than its setting is shown beside the
  setting's runs of the same methods (and of `spec.compare`), against the setting's teacher
  and no-teacher baseline (its own no-teacher runs, if any, become a row of their own)."""
  found, labels, note = results_store.load_study(results_dir / TASK / study), dict(LABELS), ""
  setting_dir = results_dir / TASK / spec.setting
  if study != spec.setting and setting_dir.is_dir():
    base = results_store.load_study(setting_dir)
    for m in [m for m in list(found) if m != TEACHER and m in base]:  # the study's variants
      found[f"{m}, {study}"], labels[f"{m}, {study}"] = found.pop(m), f"{LABELS[m]}, {study}"
    for m in dict.fromkeys([*(m.split(", ")[0] for m in found), *spec.compare]):
      if m in base and m not in (TEACHER, BASELINE):
        found[f"{m}, {spec.setting}"], labels[f"{m}, {spec.setting}"] = base[m], f"{LABELS[m]}, {spec.setting}"
    found.update({m: base[m] for m in (TEACHER, BASELINE) if m in base and m not in found})
    note = f"Rows marked {spec.setting}, the teacher and the baseline: results/{TASK}/{spec.setting}."
  what = f"Study {study}: {spec.doc or STUDIES[spec.setting].doc}." if study in STUDIES else f"Ad-hoc study {study}."
  table = results_store.render_table(found, BASELINE, labels, n_boot=n_boot, note=f"{what} {note}".strip())
  (results_dir / TASK / study / "table.md").write_text(table)
  return table


def markers(study: str) -> tuple[str, str]:
  """The README markers of a study's table (l3 keeps the original unnamed ones)."""
  tag = "" if study == "l3" else f"rt_{study}:"
  return f"<!-- RESULTS:{tag}BEGIN -->", f"<!-- RESULTS:{tag}END -->"


def update_readme(readme: Path, table: str, study: str = "l3", required: bool = True) -> bool:
  """Puts `table` between the study's markers; False (or, if required, an error) without them."""
  begin, end = markers(study)
  text = readme.read_text()
  if (begin not in text or end not in text) and required:
    raise ValueError(f"{readme} has no {begin} ... {end} markers to put the table between")
  if begin not in text or end not in text:
    return False
  head, rest = text.split(begin, 1)
  readme.write_text(f"{head}{begin}\n{table.rstrip()}\n{end}{rest.split(end, 1)[1]}")
  return True


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m jaxdistill.results", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--task", default=TASK, choices=(TASK, "ner", "squad"),
                 help="ner / squad: the token and span tasks' rows (jaxdistill/results_token_span.py)")
  p.add_argument("--setting", default="", choices=("", *SETTINGS), help="default l3 (or the study's)")
  p.add_argument("--study", default="", help=f"one of {', '.join(STUDIES)}, or a new name with --set")
  p.add_argument("--methods", default=None, help="comma list (default: the study's); '' = the teacher only")
  p.add_argument("--seeds", default="0,1,2", help="a list (0,1,2; one seed: 3,) or a count (5 = 0..4)")
  p.add_argument("--workdir", default="runs/results", help="teacher/ and <study>/<method>_s<seed> runs")
  p.add_argument("--results-dir", default="results", help="rotten_tomatoes/<study>/<method>_seed<k>.json")
  p.add_argument("--readme", default="README.md", help="'' to leave the README alone")
  p.add_argument("--latency-iters", type=int, default=20, help="0: no latency (speedup n/a)")
  p.add_argument("--n-boot", type=int, default=10000)
  p.add_argument("--render-only", action="store_true", help="re-render from the result files, train nothing")
  p.add_argument("--no-render", action="store_true", help="train and collect only (parallel workers)")
  p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                 help="override a key in every student run, e.g. --set losses.lad=10 (needs --study)")
  p.add_argument("--teacher-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                 help="override a key of the teacher's run (needs --study)")
  p.add_argument("--variant", default="", help="config variant for every run, e.g. tiny (needs --study)")
  args = p.parse_args(argv)
  try:
    seeds = parse_seeds(args.seeds)
    pairs = [tuple(s.split("=", 1)) for s in args.set + args.teacher_set]
    if any(len(kv) != 2 for kv in pairs):
      raise ConfigError("--set / --teacher-set take SECTION.KEY=VALUE, e.g. --set losses.lad=10")
    sets, teacher_sets = pairs[:len(args.set)], pairs[len(args.set):]
    study = args.study or args.setting or "l3"
    if args.task == TASK:
      spec, methods = resolve(study, args.setting, args.methods, bool(pairs or args.variant), args.render_only)
  except ConfigError as e:
    p.error(str(e))
  setup_logging()  # the process-wide settings `python -m jaxdistill.train` makes
  host_memory.keep_freed_memory()
  enable_compilation_cache(jax)
  if args.task != TASK:
    from jaxdistill import results_token_span  # noqa: PLC0415
    workdir = "" if args.workdir == "runs/results" else args.workdir
    print(results_token_span.main(args.task, workdir, seeds, args.readme, args.render_only))
    return 0
  try:  # a wrong config in a finished workdir, a missing or bad result file: one line, no traceback
    if not args.render_only:
      run_study(study, spec, methods, seeds, Path(args.workdir), Path(args.results_dir), variant=args.variant,
                sets=sets, teacher_sets=teacher_sets, latency_iters=args.latency_iters)
    if args.no_render:
      return 0
    table = render(study, spec, Path(args.results_dir), args.n_boot)
  except (ConfigError, DataError) as e:
    p.exit(2, f"{p.prog}: error: {e}\n")
  print(table)
  if args.readme and not update_readme(Path(args.readme), table, study, required=study in SETTINGS):
    log.info("%s has no markers for study %s; the table is in %s", args.readme, study,
             Path(args.results_dir) / TASK / study / "table.md")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
