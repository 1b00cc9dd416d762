"""python -m jaxdistill.bench --run configs/kd.py: a whole distillation run, jaxdistill vs PyTorch.

    python -m jaxdistill.bench --run configs/kd.py --teacher runs/demo/teacher/export
    python -m jaxdistill.bench --run configs/pkd.py --train-examples 2000 --epochs 1 --json out.json
    python -m jaxdistill.bench --run configs/kd.py:tiny --set optim.lr=3e-5 --sides jax

Users wait for the run, not the step. Each side runs the complete run in its own child
process, in a fresh directory under --workdir: reading and tokenising the data (no
tokenisation cache), every epoch, the dev evaluations the config asks for, the final dev and
test evaluation of the best checkpoint and the export. The wall time is the child process's,
from its start (imports included) to the exported student: "command to exported student".

- jaxdistill: `jaxdistill.pipeline.run`, as `python -m jaxdistill.train` runs it (glibc malloc
  tuned as the CLI does; no persistent XLA compilation cache, so every program compiles:
  a user's first run). Compile time is read from jax.monitoring's compile-time events
  (tracing + lowering + XLA compilation of every jitted program, top-level traces only).
- PyTorch: jaxdistill/bench/torch_run.py, transformers' BertForSequenceClassification with
  the same losses, schedule, batches and evaluation points (read its docstring).

The teacher is an already fine-tuned export (--teacher DIR), so its fine-tuning is not timed;
without --teacher the config's teacher is fine-tuned once into <workdir>/teacher (at the
run's size) and reused by later invocations. The compression report is switched off on both
sides (the PyTorch script writes none).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from jaxdistill import config_lib
from jaxdistill.bench import run_spec
from jaxdistill.core.errors import ConfigError

COMPILE_EVENTS = {"/jax/core/compile/jaxpr_trace_duration": "trace",
                  "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
                  "/jax/core/compile/backend_compile_duration": "xla_compile"}


def arg_parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(
      prog="python -m jaxdistill.bench --run",
      description="A complete distillation run (data, every epoch, evaluation, export), "
                  "jaxdistill against the same run in PyTorch; wall times and accuracies.")
  ap.add_argument("--run", required=True, metavar="CONFIG", help="configs/<method>.py[:variant]")
  ap.add_argument("--teacher", default="", help="a fine-tuned teacher export (not timed)")
  ap.add_argument("--workdir", default="runs/bench_run",
                  help="holds the teacher (without --teacher) and each side's fresh run directory")
  ap.add_argument("--train-examples", type=int, default=0,
                  help="data.max_examples: every split keeps its first N rows (RT's dev and test "
                       "have 1280, so N >= 1280 cuts train alone)")
  ap.add_argument("--epochs", type=int, default=0, help="train.epochs (of every stage that sets it)")
  ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                  help="a config override, e.g. --set optim.lr=3e-5 (also --config.KEY=VALUE)")
  ap.add_argument("--compile-cache", default="", metavar="DIR",
                  help="jax side: keep compiled programs in DIR as `python -m jaxdistill.train` "
                       "does; the second --run with the same DIR times a user's second run")
  ap.add_argument("--sides", default="jax,torch", help="jax,torch | jax | torch (in this order)")
  ap.add_argument("--keep", action="store_true", help="keep each side's run directory")
  ap.add_argument("--json", default="", help="also write every figure to this file")
  return ap


def _overrides(args, rest) -> list[list[str]]:
  out = []
  for kv in args.set:
    key, eq, value = kv.partition("=")
    if not eq:
      raise SystemExit(f"--set {kv!r}: use --set section.key=value")
    out.append([key.removeprefix("config."), value])
  try:
    out += [list(kv) for kv in config_lib.parse_overrides(rest)]
  except ConfigError as e:
    raise SystemExit(f"error: {e}") from None
  return out


def _child(module: str, *args: str) -> tuple[int, float]:
  """Runs `python -m module args` (output shown as it comes); (exit code, wall seconds).
  Each side runs alone, so JAX may preallocate GPU memory as a user's run does (the step
  benchmark's __main__ switches that off for its shared-device rounds)."""
  env = {k: v for k, v in os.environ.items() if k != "XLA_PYTHON_CLIENT_PREALLOCATE"}
  t = time.perf_counter()
  rc = subprocess.run([sys.executable, "-m", module, *args], env=env).returncode
  return rc, time.perf_counter() - t


def resolve_teacher(spec: run_spec.Spec, workdir: Path) -> str:
  """--teacher, else the config's teacher: fine-tuned once into <workdir>/teacher if the
  config fine-tunes one (skipped when done there), else its teacher.source as it is."""
  if spec.teacher:
    if not (Path(spec.teacher) / "config.json").is_file():
      raise SystemExit(f"--teacher {spec.teacher}: no config.json there; pass a fine-tuned "
                       "export directory (e.g. runs/demo/teacher/export)")
    return str(Path(spec.teacher).resolve())
  config = run_spec.run_config(spec, finetune_teacher=True)
  if not config.teacher.finetune:
    return config.teacher.source
  tdir = workdir / "teacher"
  if not (tdir / "export" / "DONE").is_file():
    print(f"# fine-tuning the teacher once into {tdir} (not timed; reused next time)", flush=True)
    spec_path = workdir / "teacher_spec.json"
    spec.save(spec_path)
    rc, wall = _child("jaxdistill.bench.run_bench", "--child", "teacher", "--spec", str(spec_path),
                      "--workdir", str(workdir))
    if rc:
      raise SystemExit(f"the teacher fine-tune failed (exit {rc}); its output is above")
    print(f"# teacher fine-tuned in {wall:.0f} s", flush=True)
  return str((tdir / "export").resolve())


def run_side(side: str, spec: run_spec.Spec, workdir: Path, keep: bool) -> dict:
  d = Path(tempfile.mkdtemp(prefix=f"{side}_", dir=workdir))
  spec.save(d / "spec.json")
  module = "jaxdistill.bench.run_bench" if side == "jax" else "jaxdistill.bench.torch_run"
  extra = ("--child", "jax") if side == "jax" else ()
  print(f"# {side}: running in {d / 'run'}", flush=True)
  rc, wall = _child(module, *extra, "--spec", str(d / "spec.json"), "--workdir", str(d / "run"),
                    "--out", str(d / "result.json"))
  if rc:
    raise SystemExit(f"the {side} side failed (exit {rc}); its output is above ({d})")
  result = json.loads((d / "result.json").read_text())
  result["wall_s"] = wall
  result["run_dir"] = str(d / "run") if keep else None
  if not keep:
    shutil.rmtree(d, ignore_errors=True)
  return result


def main(argv=None) -> dict:
  args, rest = arg_parser().parse_known_args(argv)
  sides = [s.strip() for s in args.sides.split(",") if s.strip()]
  if not sides or set(sides) - {"jax", "torch"}:
    raise SystemExit(f"--sides {args.sides!r}: use jax,torch, jax or torch")
  spec = run_spec.Spec(args.run, _overrides(args, rest), args.train_examples, args.epochs,
                       args.teacher, args.compile_cache)
  workdir = Path(args.workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  try:  # every refusal before anything runs
    plans = run_spec.stage_plans(run_spec.run_config(spec), workdir)
    if "torch" in sides:
      for p in plans:
        run_spec.check_supported(p.config)
  except ConfigError as e:
    raise SystemExit(f"error: {e}") from None
  spec.teacher = resolve_teacher(spec, workdir)
  results = {side: run_side(side, spec, workdir, args.keep) for side in sides}
  out = summarise(spec, plans, results)
  print_report(out)
  if args.json:
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
  return out


def summarise(spec: run_spec.Spec, plans, results: dict) -> dict:
  last = plans[-1].config
  out = {"config": spec.config, "overrides": spec.overrides, "method": last.method,
         "train_examples": spec.train_examples, "epochs": spec.epochs, "teacher": spec.teacher,
         "batch_size": int(last.train.batch_size), "stages": [p.name for p in plans],
         "cpu": run_spec.cpu_info(), "sides": results}
  for side, r in results.items():
    r["steps"] = sum(s["steps"] for s in r["stages"])
    r["examples"] = sum(s["examples"] for s in r["stages"])
    r["dev_accuracy"] = r["student"]["dev"]["accuracy"]
    r["test_accuracy"] = r["student"]["test"]["accuracy"]
  if {"jax", "torch"} <= set(results):
    j, t = results["jax"], results["torch"]
    out["jax_over_torch_wall"] = j["wall_s"] / t["wall_s"]
    out["same_batches"] = [a["plan"] == b["plan"] for a, b in zip(j["stages"], t["stages"])]
  return out


def print_report(out: dict) -> None:
  p, sides = print, out["sides"]
  cpu = out["cpu"]
  p(f"\n# whole run: {out['config']} ({out['method']}; stages {', '.join(out['stages'])}), "
    f"batch {out['batch_size']}, train examples {out['train_examples'] or 'all'}, "
    f"epochs {out['epochs'] or 'as configured'}; teacher {out['teacher']}")
  p(f"# CPU: {cpu['model']}, {cpu['usable_cpus']} of {cpu['logical_cpus']} logical CPUs usable; "
    f"flags: {' '.join(cpu['flags']) or 'none of avx2/avx512/amx'}")
  if "jax" in sides:
    j = sides["jax"]
    p(f"# jaxdistill ({j['framework']}, {j['device']}): XLA CPU threads = usable CPUs "
      f"({cpu['usable_cpus']}); malloc {j['malloc']}; compile time from jax.monitoring events")
  if "torch" in sides:
    t = sides["torch"]
    p(f"# PyTorch ({t['framework']}, {t['device']}): {t['threads']['intra_op']} intra-op / "
      f"{t['threads']['inter_op']} inter-op threads; AdamW {t['optimizer']}")
  names = list(sides)
  p("\n" + f"{'':34}" + "".join(f"{n:>14}" for n in names))

  def row(label, fn):
    cells = []
    for n in names:
      try:
        v = fn(sides[n])
      except (KeyError, TypeError):
        v = None
      cells.append("-" if v is None else (f"{v:.1f} s" if isinstance(v, float) else str(v)))
    p(f"{label:34}" + "".join(f"{c:>14}" for c in cells))

  row("wall: command -> exported student", lambda r: r["wall_s"])
  row("  compile (trace+lower+XLA)", lambda r: r["compile_s"]["total"])
  row("  the rest", lambda r: r["wall_s"] - r["compile_s"]["total"])
  row("  imports", lambda r: r["import_s"])
  phases = sorted({k for r in sides.values() for k in r.get("phases_s", {}) if k != "imports"})
  for k in phases:
    row(f"  {k}", lambda r, k=k: r["phases_s"].get(k))
  row("train steps / examples", lambda r: f"{r['steps']} / {r['examples']}")
  row("teacher outputs cached once", lambda r: (
      "yes" if r["stages"][-1].get("teacher_cached") else "no") if "teacher_cache" not in r
      else ("yes" if any("cache: off" not in n for n in r["teacher_cache"]) else "no"))
  row("first / last logged train loss", lambda r: (
      f"{r['stages'][-1]['train_loss'][0][1]:.4g}/{r['stages'][-1]['train_loss'][-1][1]:.4g}"))
  row("dev accuracy", lambda r: f"{100 * r['dev_accuracy']:.2f}%")
  row("test accuracy", lambda r: f"{100 * r['test_accuracy']:.2f}%")
  if "jax_over_torch_wall" in out:
    p(f"\njaxdistill / PyTorch wall time: {out['jax_over_torch_wall']:.2f}x "
      f"(< 1: jaxdistill finishes first); same batches, same order: "
      f"{'yes' if all(out['same_batches']) else 'NO: ' + str(out['same_batches'])}")
    gap = abs(sides["jax"]["test_accuracy"] - sides["torch"]["test_accuracy"])
    if gap > 0.02:
      p(f"warning: test accuracies differ by {100 * gap:.1f} points; at full size that points at "
        "a reproduction error (on a few hundred examples it can be noise)")


# ---- the child processes -------------------------------------------------------------------
def jax_child(spec: run_spec.Spec, workdir: Path, *, teacher_only: bool = False) -> dict:
  t0 = time.perf_counter()
  from jaxdistill.train.__main__ import setup_logging
  setup_logging()  # before JAX's import, as the CLI does (absl would claim the root logger)
  import jax
  compile_s = collections.defaultdict(float)

  def on_duration(event, duration, **_):
    if event in COMPILE_EVENTS:
      compile_s[COMPILE_EVENTS[event]] += duration
  jax.monitoring.register_event_duration_secs_listener(on_duration)
  if spec.compile_cache:  # the CLI's persistent cache (train/__main__.py), here at a given dir
    jax.config.update("jax_compilation_cache_dir", str(Path(spec.compile_cache).resolve()))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  notes = []  # what the loop logged about the teacher cache: whether it ran the teacher

  class Capture(logging.Handler):
    def emit(self, record):
      msg = record.getMessage()
      if msg.startswith(("teacher cache", "caching")):
        notes.append(msg)
  logging.getLogger("jaxdistill").addHandler(Capture())
  from jaxdistill import data as data_lib, host_memory, pipeline
  from jaxdistill.models.hub import load_tokenizer
  import_s = time.perf_counter() - t0
  malloc = "tuned" if host_memory.keep_freed_memory() else "default"  # as the CLI runs
  if teacher_only:
    config = run_spec.run_config(spec, finetune_teacher=True)
    with config.unlocked():
      config.teacher.workdir = str(workdir / "teacher")
    pipeline.with_teacher(config, workdir)
    return {}
  config = run_spec.run_config(spec)
  with config.unlocked():
    config.cache_dir = str(workdir / "data_cache")  # empty: the run tokenises its data
  summary = pipeline.run(config, workdir)
  in_process_s = time.perf_counter() - t0
  stages = []
  for plan in run_spec.stage_plans(config, workdir):  # after the timed part: read what it did
    c = plan.config
    lines = [json.loads(x) for x in (plan.workdir / "metrics.jsonl").read_text().splitlines()]
    train_loss = [(m["step"], m["train/loss"]) for m in lines if "train/loss" in m]
    task = data_lib.load_task(c.data, load_tokenizer(c.student.source or c.teacher.source),
                              cache_dir=config.cache_dir)
    split = task.splits["train"]
    done = json.loads((plan.workdir / "export" / "DONE").read_text())
    stages.append({"name": c.name, "student": done["student"], "steps": train_loss[-1][0],
                   "examples": train_loss[-1][0] * int(c.train.batch_size),
                   "train_loss": train_loss, "train_seconds": done["train_seconds"],
                   "plan": run_spec.train_plan_fingerprint(split.input_ids, split.lengths,
                                                           int(c.train.batch_size), int(c.seed),
                                                           int(c.train.epochs), int(c.train.max_steps))})
  total = sum(compile_s.values())
  return {"framework": f"jax {jax.__version__}", "device": str(jax.devices()[0].device_kind),
          "malloc": malloc, "import_s": import_s, "in_process_s": in_process_s,
          "compile_s": {"total": total, **compile_s}, "stages": stages, "teacher_cache": notes,
          "student": summary["student"]}


def child_main(argv=None) -> int:
  ap = argparse.ArgumentParser(prog="python -m jaxdistill.bench.run_bench")
  ap.add_argument("--child", required=True, choices=("jax", "teacher"))
  ap.add_argument("--spec", required=True)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--out", default="")
  args = ap.parse_args(argv)
  result = jax_child(run_spec.Spec.load(args.spec), Path(args.workdir),
                     teacher_only=args.child == "teacher")
  if args.out:
    Path(args.out).write_text(json.dumps(result, indent=2))
  return 0


if __name__ == "__main__":
  sys.exit(child_main())
