"""Regenerates the README's results table by running every method on Rotten Tomatoes.

    python -m jaxdistill.results --workdir runs/results [--methods kd,pkd] [--readme README.md]

Stage 1 fine-tunes the teacher once (configs/finetune.py); every method then runs with that
teacher (`teacher.workdir` shared), in its own workdir, resumable like any run. Each finished
student is then measured the same way against the teacher: test accuracy from its run, params
counted, latency interleaved teacher/student at one batch shape. The table goes to stdout,
`<workdir>/results.md`, and between the RESULTS markers in the README.
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdistill import host_memory
from jaxdistill.config_lib import load_config
from flax import nnx

from jaxdistill.models.hub import load_pretrained
from jaxdistill.report import compare_latency
from jaxdistill.pipeline import run as run_pipeline
from jaxdistill.train.__main__ import enable_compilation_cache, setup_logging
from jaxdistill.train.loop import DONE

# (row label, config); the teacher row comes from configs/finetune.py.
METHODS = {
    "student_finetune": ("3-layer student, fine-tuned without a teacher", "configs/student_finetune.py"),
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
BEGIN, END = "<!-- RESULTS:BEGIN -->", "<!-- RESULTS:END -->"


def _summary(workdir: Path) -> dict:
  return json.loads((workdir / "export" / DONE).read_text())


def _latency(teacher_dir: Path, student_dir: Path, shape, iters: int) -> dict:
  teacher, _ = load_pretrained(str(teacher_dir))
  student, _ = load_pretrained(str(student_dir))
  ids = jnp.asarray(np.random.default_rng(0).integers(1000, 2000, size=shape), jnp.int32)
  mask = jnp.ones_like(ids)

  def jitted(model):
    graph, params = nnx.split(model)
    f = jax.jit(lambda p, i, m: nnx.merge(graph, p)(i, m).logits)
    return lambda: f(params, ids, mask)

  return compare_latency(jitted(teacher), jitted(student), iters=iters)


def run(workdir: Path, methods: list[str], iters: int, overrides: dict) -> str:
  workdir.mkdir(parents=True, exist_ok=True)
  teacher_dir = workdir / "teacher"
  t0 = time.time()
  tcfg = load_config("configs/finetune.py")
  for k, v in overrides.items():
    tcfg[k.split(".")[0]][k.split(".")[1]] = v
  if not (teacher_dir / "export" / DONE).exists():
    run_pipeline(tcfg, teacher_dir)
  rows = []
  teacher = _summary(teacher_dir)
  t_acc = teacher["student"]["test"]["accuracy"]
  shape = (32, tcfg.data.max_length)
  rows.append(("6-layer MiniLM teacher (fine-tuned)", t_acc, 100.0, teacher["student_params"], 1.0))
  train_seconds = teacher["train_seconds"]
  for name in methods:
    label, path = METHODS[name]
    c = load_config(path)
    c.teacher.workdir = str(teacher_dir)
    c.report.compression = False  # measured below, the same way for every row
    for k, v in overrides.items():
      c[k.split(".")[0]][k.split(".")[1]] = v
    run_dir = workdir / name
    if not (run_dir / "export" / DONE).exists():
      run_pipeline(c, run_dir)
    s = _summary(run_dir)
    # A multi-stage run's earlier stages trained in <run>/<stage>; their time counts too.
    train_seconds += s["train_seconds"] + sum(
        _summary(d.parent.parent)["train_seconds"] for d in run_dir.glob(f"*/export/{DONE}"))
    acc = s["student"]["test"]["accuracy"]
    lat = _latency(teacher_dir / "export", run_dir / "export", shape, iters)
    rows.append((label, acc, 100 * acc / t_acc, s["student_params"], lat["speedup"]))
  minutes = (time.time() - t0) / 60
  lines = ["| model | test accuracy | retention | parameters | measured speedup |",
           "|---|---|---|---|---|"]
  lines += [f"| {r[0]} | {100 * r[1]:.2f}% | {r[2]:.1f}% | {r[3] / 1e6:.1f}M | {r[4]:.2f}x |" for r in rows]
  table = "\n".join(lines) + (
      f"\n\nRotten Tomatoes test split (1,280 reviews). Speedup: median latency of the teacher over the "
      f"student at batch {shape[0]} x {shape[1]} tokens on {jax.devices()[0].device_kind}, "
      f"interleaved, {iters} iterations. Regenerating it from an empty workdir takes about "
      f"{train_seconds / 60:.0f} minutes of training (each run's own measured time, summed); "
      f"this invocation took {minutes:.0f} minutes, reusing the runs already finished in the workdir.")
  (workdir / "results.md").write_text(table + "\n")
  return table


def update_readme(readme: Path, table: str) -> None:
  text = readme.read_text()
  if BEGIN not in text or END not in text:
    raise ValueError(f"{readme} has no {BEGIN} ... {END} markers to put the table between")
  head, rest = text.split(BEGIN, 1)
  _, tail = rest.split(END, 1)
  readme.write_text(f"{head}{BEGIN}\n{table}\n{END}{tail}")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(prog="python -m jaxdistill.results", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default="runs/results")
  p.add_argument("--methods", default=",".join(METHODS))
  p.add_argument("--readme", default="README.md", help="'' to leave the README alone")
  p.add_argument("--latency-iters", type=int, default=20)
  p.add_argument("--task", default="rotten_tomatoes", choices=("rotten_tomatoes", "ner", "squad"),
                 help="ner / squad: the token and span tasks' rows (jaxdistill/results_token_span.py)")
  p.add_argument("--seeds", default="0,1,2", help="--task ner/squad: the student seeds")
  p.add_argument("--render-only", action="store_true",
                 help="--task ner/squad: re-render from results/<task>/*.json, train nothing")
  p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                 help="override a config key in every run, e.g. --set data.max_examples=200")
  args = p.parse_args(argv)
  if args.task != "rotten_tomatoes":
    from jaxdistill import results_token_span  # noqa: PLC0415
    setup_logging()
    host_memory.keep_freed_memory()
    enable_compilation_cache(jax)
    workdir = "" if args.workdir == "runs/results" else args.workdir
    print(results_token_span.main(args.task, workdir, [int(x) for x in args.seeds.split(",") if x],
                                  args.readme, args.render_only))
    return 0
  methods = [m for m in args.methods.split(",") if m]
  unknown = [m for m in methods if m not in METHODS]
  if unknown:
    p.error(f"unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
  overrides = {}
  for item in args.set:
    k, v = item.split("=", 1)
    try:
      overrides[k] = ast.literal_eval(v)
    except (ValueError, SyntaxError):
      overrides[k] = v
  setup_logging()  # the process-wide settings `python -m jaxdistill.train` makes
  host_memory.keep_freed_memory()
  enable_compilation_cache(jax)
  table = run(Path(args.workdir), methods, args.latency_iters, overrides)
  print(table)
  if args.readme:
    update_readme(Path(args.readme), table)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
