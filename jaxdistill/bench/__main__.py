"""python -m jaxdistill.bench: jaxdistill's distillation step vs PyTorch, in one run.

    python -m jaxdistill.bench --preset minilm            # MiniLM 6L/384 -> 3L, batch 32 x 128
    python -m jaxdistill.bench --preset base --dtype bfloat16   # BERT-base 12L -> 6L (a GPU)
    python -m jaxdistill.bench --preset minilm --frameworks jax --json bench.json

What is timed, in interleaved rounds (jax, torch, matmul peak; the next round torch first), so
that a machine whose speed drifts (shared cores, thermal limits) slows both sides alike:
(a) jaxdistill's own jitted train step (jax_side.py), (b) the PyTorch reference step
(torch_side.py), (c) the matmul peak of both frameworks (peak.py). Then teacher and student
inference latency in both frameworks, interleaved the same way; then peak memory, each
framework in a child process (memory.py). See docs/performance.md for how to read the output.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

# On a GPU both frameworks share the device: JAX must not preallocate most of its memory
# (read when the backend starts, so set before any jax call).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from jaxdistill.bench import flops as flops_lib, peak as peak_lib, setup as setup_lib


def _median(xs):
  return statistics.median(xs) if xs else None


def _spread(xs) -> str:
  """min-max around the median, as a percentage: the run's own noise figure."""
  if len(xs) < 2:
    return "n/a"
  m = statistics.median(xs)
  return f"{100 * (min(xs) - m) / m:+.0f}%/{100 * (max(xs) - m) / m:+.0f}%"


def _mib(n):
  return "n/a" if n is None else f"{n / 2 ** 20:.0f} MiB"


def run(argv=None) -> dict:
  args = setup_lib.arg_parser().parse_args(argv)
  frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
  if not frameworks or set(frameworks) - {"jax", "torch"}:
    raise SystemExit(f"--frameworks {args.frameworks!r}: use jax,torch, jax, or torch")
  if args.iters < 1 or args.rounds < 1:
    raise SystemExit("--iters and --rounds must be >= 1")
  s = setup_lib.from_args(args)
  from jaxdistill import host_memory
  # Process-wide, so both frameworks run with the same malloc settings (--malloc default: glibc's).
  malloc = "tuned" if args.malloc == "tuned" and host_memory.keep_freed_memory() else "default"
  import jax
  from jaxdistill.bench import jax_side
  platform = jax.devices()[0].platform
  print(f"# {s.describe()}; {platform} ({len(jax.devices())} device(s)); "
        f"{args.rounds} rounds x {args.iters} steps; malloc {malloc}", flush=True)
  params = setup_lib.params(s)
  batch = jax_side.synthetic_batch(s.batch, s.seq, s.student.vocab_size, s.seed)
  sides, peaks = {}, {}
  if "jax" in frameworks:
    sides["jax"] = jax_side.build(s.student, s.teacher, s.batch, s.seq, s.dtype, params, s.seed)
    print(f"# jax: train step compiled in {sides['jax'].compile_s:.1f} s", flush=True)
  if "torch" in frameworks:
    from jaxdistill.bench import torch_side
    sides["torch"] = torch_side.build(s.student, s.teacher, params, batch, s.dtype, platform)
    print(f"# torch {sides['torch'].device}: {sides['torch'].threads} threads, "
          f"{sides['torch'].optimizer} AdamW", flush=True)
  peak_dtypes = sorted({"float32", s.dtype})
  for d in peak_dtypes:
    if "jax" in sides:
      peaks[f"jax/{d}"] = peak_lib.jax_matmul(platform, d)
    if "torch" in sides:
      peaks[f"torch/{d}"] = peak_lib.torch_matmul(sides["torch"].device, d)

  # Warm-up outside the timed rounds (first-touch allocation, caches, thread pools).
  for side in sides.values():
    side.train(1)
  step_s = {name: [] for name in sides}
  cpu_s = {name: [] for name in sides}  # process CPU seconds: less sensitive to other tenants
  peak_gflops = {name: [] for name in peaks}
  names = list(sides)
  for r in range(args.rounds):
    for name in (names if r % 2 == 0 else names[::-1]):
      cpu0 = time.process_time()
      step_s[name].append(sides[name].train(args.iters) / args.iters)
      cpu_s[name].append((time.process_time() - cpu0) / args.iters)
    for name, measure in peaks.items():
      peak_gflops[name].append(peak_lib.best_of(measure, 3))
    print(f"# round {r + 1}/{args.rounds}: " + ", ".join(
        f"{n} {s.batch / step_s[n][-1]:.1f} ex/s" for n in names), flush=True)

  # Inference is ~3x cheaper than a train step: more calls per block, same interleaving.
  infer_s = {f"{n}/{role}": [] for n in names for role in ("teacher", "student")}
  infer_iters = 2 * args.iters
  for side in sides.values():
    side.infer_teacher(1), side.infer_student(1)
  for r in range(args.rounds):
    for name in (names if r % 2 == 0 else names[::-1]):
      for role in (("teacher", "student") if r % 2 == 0 else ("student", "teacher")):
        fn = getattr(sides[name], f"infer_{role}")
        infer_s[f"{name}/{role}"].append(fn(infer_iters) / infer_iters)

  memory = {}
  if args.memory == "subprocess":
    from jaxdistill.bench import memory as memory_lib
    print(f"# measuring peak memory: one child process per framework ({', '.join(names)})",
          flush=True)
    memory = memory_lib.run_children(names, args)

  fl = flops_lib.step_flops(s.student, s.teacher, s.batch, s.seq)
  machine_peak_by_round = [max(peak_gflops[n][r] for n in peaks) for r in range(args.rounds)]
  result = {"setup": s.describe(), "platform": platform, "malloc": malloc, "rounds": args.rounds,
            "iters": args.iters, "flops": fl.as_dict(),
            "peak_gflops": {n: _median(v) for n, v in peak_gflops.items()},
            "machine_peak_gflops": _median(machine_peak_by_round), "frameworks": {}}
  for name in names:
    side, times = sides[name], step_s[name]
    gflops_r = [fl.train_step / t / 1e9 for t in times]
    t_inf, s_inf = _median(infer_s[f"{name}/teacher"]), _median(infer_s[f"{name}/student"])
    result["frameworks"][name] = {
        "examples_per_s": s.batch / _median(times),
        "examples_per_s_by_round": [s.batch / t for t in times],
        "step_s": _median(times),
        "cpu_s_per_step": _median(cpu_s[name]),
        "gflops": _median(gflops_r),
        "mfu": _median([g / p for g, p in zip(gflops_r, machine_peak_by_round)]),
        "compile_s": getattr(side, "compile_s", None),
        "first_step_s": getattr(side, "first_step_s", None),
        "xla_flops": getattr(side, "xla_flops", None),
        "last_loss": side.loss(),
        "infer_teacher_s": t_inf, "infer_student_s": s_inf,
        # Median of per-round ratios: the teacher and student of one round ran back to back.
        "infer_speedup": _median([t / s_ for t, s_ in zip(infer_s[f"{name}/teacher"],
                                                          infer_s[f"{name}/student"])]),
        "memory": memory.get(name),
    }
  if {"jax", "torch"} <= set(names):
    result["jax_over_torch"] = _median([t / j for j, t in zip(step_s["jax"], step_s["torch"])])
    result["jax_over_torch_cpu_time"] = _median([t / j for j, t in zip(cpu_s["jax"], cpu_s["torch"])])
    result["jax_over_torch_inference_student"] = (
        result["frameworks"]["torch"]["infer_student_s"] / result["frameworks"]["jax"]["infer_student_s"])
  _print(result, step_s, peak_gflops, fl, s.batch, infer_s)
  if args.json:
    with open(args.json, "w") as f:
      json.dump(result, f, indent=2)
  return result


def _print(result: dict, step_s: dict, peak_gflops: dict, fl, batch: int, infer_s: dict) -> None:
  p = print
  p(f"\nmodel FLOPs per train step (analytic, matmuls only): {fl.train_step / 1e9:.1f} GFLOP "
    f"(student fwd {fl.student_forward / 1e9:.1f} x3 + teacher fwd {fl.teacher_forward / 1e9:.1f})")
  for name, v in result["peak_gflops"].items():
    p(f"matmul peak {name}: {v:.1f} GFLOP/s (median over rounds, spread {_spread(peak_gflops[name])})")
  p(f"machine peak (best framework per round, median): {result['machine_peak_gflops']:.1f} GFLOP/s")
  p("")
  p(f"{'':8}{'examples/s':>12}{'spread':>14}{'GFLOP/s':>10}{'MFU':>7}{'compile/1st':>13}"
    f"{'step mem':>11}{'infer T':>10}{'infer S':>10}{'T/S':>7}")
  for name, f in result["frameworks"].items():
    eps = [batch / t for t in step_s[name]]
    warm = f["compile_s"] if f["compile_s"] is not None else f["first_step_s"]
    mem = f["memory"] or {}
    mem_s = mem.get("error") and "error" or _mib(mem.get("device_peak_bytes") or mem.get("step_peak_bytes"))
    p(f"{name:8}{f['examples_per_s']:12.2f}{_spread(eps):>14}{f['gflops']:10.1f}"
      f"{100 * f['mfu']:6.1f}%{warm:12.1f}s{mem_s:>11}{1e3 * f['infer_teacher_s']:8.1f}ms"
      f"{1e3 * f['infer_student_s']:8.1f}ms{f['infer_speedup']:6.2f}x")
    if mem.get("error"):
      p(f"  {mem['error']}")
    p(f"  CPU time {f['cpu_s_per_step']:.2f} s/step; inference spread teacher "
      f"{_spread(infer_s[name + '/teacher'])}, student {_spread(infer_s[name + '/student'])}")
    if f["xla_flops"]:
      p(f"  XLA's own count of the compiled step: {f['xla_flops'] / 1e9:.1f} GFLOP (all ops)")
    if mem.get("xla_planned_bytes"):
      p(f"  XLA's buffer plan for one step: {_mib(mem['xla_planned_bytes'])}")
  if "jax_over_torch" in result:
    p(f"\njaxdistill / PyTorch train examples/s: {result['jax_over_torch']:.2f}x "
      f"(median of per-round ratios; CPU time per step: {result['jax_over_torch_cpu_time']:.2f}x)")
    p(f"student inference, PyTorch latency / jaxdistill latency: "
      f"{result['jax_over_torch_inference_student']:.2f}x")


def main() -> int:
  t = time.perf_counter()
  if any(a == "--run" or a.startswith("--run=") for a in sys.argv[1:]):  # a whole run (run_bench.py)
    from jaxdistill.bench import run_bench
    run_bench.main(sys.argv[1:])
    print(f"# total {time.perf_counter() - t:.0f} s")
    return 0
  if any(a == "--forks" or a.startswith("--forks=") for a in sys.argv[1:]):  # train.forks (forks.py)
    from jaxdistill.bench import forks
    forks.main(sys.argv[1:])
    print(f"# total {time.perf_counter() - t:.0f} s")
    return 0
  run(sys.argv[1:])
  print(f"# total {time.perf_counter() - t:.0f} s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
