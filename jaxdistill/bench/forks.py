"""python -m jaxdistill.bench --forks 1,2,4 [--config configs/kd.py:tiny]: what train.forks buys.

For each K the trainer's own jitted step runs on the config's models and real train batches:
K=1 is a plain run's step (train/step.py), K>1 the vmapped step of train/forks.py over K
stacked states, both fed as the loop feeds them (the host batch, the teacher's cached outputs
or params), in interleaved rounds (K=1, 2, 4, then 4, 2, 1, ...) so that a machine whose speed
drifts slows every K alike. Each student trains at batch / step time; all K together at
K x batch / step time, where K separate runs (one after another) stay at the K=1 rate, so
"vs K runs" is (K x the K=1 step time) / (the K-fork step time).

The teacher is the config's teacher.source as it is (a fresh classifier when it has none: the
step costs the same; nothing here is trained to be good), so no teacher stage runs first.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import jax
from jax.sharding import NamedSharding

from jaxdistill import data as data_lib
from jaxdistill import methods
from jaxdistill.config_lib import apply_overrides, load_config, parse_overrides
from jaxdistill.methods.base import RunInfo
from jaxdistill.models.hub import load_pretrained, load_tokenizer, params_of
from jaxdistill.train import build, forks, sharding, teacher_cache
from jaxdistill.train.loop import cache_root
from jaxdistill.train.step import (init_state, jit_train_step, make_mesh, make_optimizer, models_of,
                                   optimizer_labels, state_sharding, teacher_inputs, teacher_shardings)


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


class Bench:
  """The config's task, models, optimizer and teacher inputs, built once for every K."""

  def __init__(self, config, workdir: str):
    self.config = c = config
    self.method = methods.get(c)
    self.mesh = make_mesh(c)
    self.batch_sharding = NamedSharding(self.mesh, sharding.BATCH)
    tok_source = c.student.source or c.teacher.source
    self.task = data_lib.load_task(c.data, load_tokenizer(tok_source),
                                   cache_dir=c.cache_dir or os.path.join(cache_root(), "data"))
    self.student = build.build_student(c, self.task, c.teacher.source, self.method)
    teachers = []
    if self.method.teacher_use() != "none":
      model, _ = load_pretrained(c.teacher.source, seed=c.seed, dtype=c.train.dtype,
                                 **build.head_overrides(self.task))
      teachers = [(model.config, params_of(model))]
    split = self.task.splits["train"]
    per_epoch = data_lib.num_batches(split, c.train.batch_size, train=True, drop_remainder=True)
    total = per_epoch * c.train.epochs
    self.method.setup(RunInfo(self.student.cfg, tuple(cfg for cfg, _ in teachers), total))
    self.models = models_of(self.student.cfg, tuple(cfg for cfg, _ in teachers))
    self.tx = make_optimizer(c, total, optimizer_labels(c, self.method))
    rules = sharding.rules_of(c)
    placed = teacher_shardings(self.mesh, self.models.teacher_cfgs, rules, cached=False).params or ()
    teacher_params = tuple(sharding.put(p, sh) for (_, p), sh in zip(teachers, placed)) or None
    cache = teacher_cache.build(c, workdir, self.method, self.models, teacher_params, self.task,
                                self.mesh, self.batch_sharding, self.student.params)
    self.cached = cache is not None
    self.layout = sharding.BatchLayout(self.batch_sharding, c.train.batch_size)
    self.host_batches = list(self.layout.batches(split, train=True, seed=c.seed, epoch=0,
                                                 drop_remainder=True,
                                                 bucket_multiple=c.train.bucket_multiple))
    self.feed = lambda b: teacher_inputs(None if self.cached else teacher_params, cache, b,
                                         layout=self.layout)
    self.teacher_mode = ("cached outputs" if self.cached else
                         "a forward in the step" if teacher_params else "no teacher")

  def step_and_state(self, k: int):
    c, m = self.config, self.method
    if k == 1:
      step = jit_train_step(c, self.mesh, m, self.models, self.tx, cached=self.cached)
      state = sharding.put(init_state(self.student.params, m.init_params(c.seed), self.tx),
                           state_sharding(c, self.mesh, m, self.student.cfg, self.tx))
      return step, state
    ck = c.copy_and_resolve_references()
    ck.train.forks = k
    plan = forks.ForkPlan(ck)
    plan.setup(m.run, self.task, c.teacher.source, self.student)
    return plan.take_over(ck, self.mesh, m, self.models, self.tx, cached=self.cached)


def run(argv=None) -> dict:
  ap = argparse.ArgumentParser(prog="python -m jaxdistill.bench --forks 1,2,4",
                               description="per-student throughput of train.forks=K against K runs")
  ap.add_argument("--forks", required=True, help="the K values, e.g. 1,2,4 (1 is always measured)")
  ap.add_argument("--config", default="configs/kd.py:tiny", help="configs/<name>.py[:variant]")
  ap.add_argument("--iters", type=int, default=5, help="train steps per timed block")
  ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
  ap.add_argument("--json", default="", help="also write every figure to this file")
  args, rest = ap.parse_known_args(argv)
  ks = sorted({1} | {int(x) for x in args.forks.split(",") if x.strip()})
  if ks[0] < 1 or args.iters < 1 or args.rounds < 1:
    raise SystemExit("--forks values, --iters and --rounds must be >= 1")
  config = load_config(args.config)
  apply_overrides(config, parse_overrides(rest))
  with config.unlocked():
    config.teacher.finetune = False  # the teacher as it is: only the step's cost matters here
  with tempfile.TemporaryDirectory() as workdir:
    b = Bench(config, workdir)
    bs = config.train.batch_size
    print(f"# {args.config}: student {b.student.cfg.num_layers}L/{b.student.cfg.hidden_size}, batch "
          f"{bs} x {config.data.max_length}, teacher: {b.teacher_mode}; {jax.devices()[0].device_kind} "
          f"({len(jax.devices())} device(s)), CPU {cpu_model()} ({os.cpu_count()} cores); "
          f"{args.rounds} rounds x {args.iters} steps", flush=True)
    sides, compile_s = {}, {}
    for k in ks:
      t0 = time.perf_counter()
      step, state = b.step_and_state(k)
      state, _ = step(state, b.feed(b.host_batches[0]), b.layout.put(b.host_batches[0]))
      jax.block_until_ready(state)
      compile_s[k] = time.perf_counter() - t0
      sides[k] = [step, state]
    times = {k: [] for k in ks}
    n = len(b.host_batches)
    for r in range(args.rounds):
      for k in (ks if r % 2 == 0 else ks[::-1]):
        step, state = sides[k]
        t0 = time.perf_counter()
        for i in range(args.iters):
          hb = b.host_batches[(r * args.iters + i) % n]
          state, metrics = step(state, b.feed(hb), b.layout.put(hb))
        jax.block_until_ready((state, metrics))
        times[k].append((time.perf_counter() - t0) / args.iters)
        sides[k][1] = state
      print(f"# round {r + 1}/{args.rounds}: " + ", ".join(
          f"K={k} {k * bs / times[k][-1]:.1f} ex/s (all students)" for k in ks), flush=True)
  t1 = statistics.median(times[1])
  result = {"config": args.config, "cpu": cpu_model(), "device": jax.devices()[0].device_kind,
            "batch": bs, "seq": config.data.max_length, "teacher": b.teacher_mode, "forks": {}}
  print(f"\n{'K':>3}{'step ms':>10}{'ex/s, each student':>20}{'ex/s, all students':>20}"
        f"{'vs K runs':>11}{'compile s':>11}")
  for k in ks:
    tk = statistics.median(times[k])
    row = {"step_s": tk, "step_s_by_round": times[k], "examples_per_s_per_student": bs / tk,
           "examples_per_s_all": k * bs / tk, "vs_separate_runs": k * t1 / tk,
           "compile_and_first_step_s": compile_s[k]}
    result["forks"][k] = row
    print(f"{k:>3}{1e3 * tk:>10.1f}{bs / tk:>20.1f}{k * bs / tk:>20.1f}{k * t1 / tk:>10.2f}x"
          f"{compile_s[k]:>11.1f}")
  print("(all students: K x batch / step time, what K separate runs reach at the K=1 row's rate;\n"
        " vs K runs: K x the K=1 step time over the K-fork step time, > 1 is a gain)")
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  return result


def main(argv=None) -> int:
  run(argv)
  return 0
