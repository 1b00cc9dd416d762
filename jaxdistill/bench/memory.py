"""Peak memory of one framework's train step, measured in a child process of its own.

In one process the two frameworks' allocations would mix, so each is measured alone:

    python -m jaxdistill.bench.memory '{"framework": "jax", "preset": "minilm", ...}'

prints one JSON line. The child imports its framework, records the RSS (the baseline), builds
the weights, models, optimizer state and train step (no inference models), runs one warm-up
step, then runs `iters` steps while peak.RssSampler reads the RSS every millisecond. Reported:

- `step_peak_bytes`: peak RSS during the steps minus the baseline: weights, optimizer state,
  activations, the allocator's holdings. This is the comparable figure.
- `process_peak_bytes`: the whole process's ru_maxrss (includes JAX's compiler, torch's
  libraries), for reference.
- `device_peak_bytes`: on a GPU, the device allocator's own peak.
- `xla_planned_bytes` (JAX): XLA's buffer plan for one step (arguments + outputs - donated +
  temporaries): the memory the step needs, independent of the allocator.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys


def run_child(framework: str, args: argparse.Namespace) -> dict:
  spec = dict(framework=framework, preset=args.preset, batch=args.batch, seq=args.seq,
              dtype=args.dtype, weights=args.weights, seed=args.seed, iters=max(2, args.iters),
              malloc=args.malloc)
  proc = subprocess.run([sys.executable, "-m", "jaxdistill.bench.memory", json.dumps(spec)],
                        capture_output=True, text=True)
  lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
  if proc.returncode != 0 or not lines:
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"error": f"memory probe for {framework} failed: {tail[0]}"}
  return json.loads(lines[-1])


def run_children(frameworks: list[str], args: argparse.Namespace) -> dict[str, dict]:
  """One child per framework, run at the same time: RSS is per process, so they do not
  disturb each other's figures (only the wall time they take)."""
  from concurrent.futures import ThreadPoolExecutor
  with ThreadPoolExecutor(len(frameworks)) as pool:
    results = pool.map(lambda name: run_child(name, args), frameworks)
  return dict(zip(frameworks, results))


def _measure(spec: dict) -> dict:
  from jaxdistill.bench import peak, setup as setup_lib
  args = argparse.Namespace(**{**spec, "memory": "off", "frameworks": spec["framework"],
                               "json": "", "rounds": 1})
  s = setup_lib.from_args(args)
  if spec.get("malloc", "tuned") == "tuned":  # the parent's setting, in both children alike
    from jaxdistill import host_memory
    host_memory.keep_freed_memory()
  import jax
  platform = jax.devices()[0].platform  # backend initialised before the baseline
  if spec["framework"] == "jax":
    from jaxdistill.bench import jax_side
    base = peak.rss_bytes()
    bench = jax_side.build(s.student, s.teacher, s.batch, s.seq, s.dtype,
                           setup_lib.params(s), s.seed, inference=False)
    device_peak = jax_side.device_peak_bytes
  else:
    from jaxdistill.bench import jax_side, torch_side
    torch, _ = torch_side.import_torch()
    torch.set_num_threads(torch_side.cores())
    batch = jax_side.synthetic_batch(s.batch, s.seq, s.student.vocab_size, s.seed)
    base = peak.rss_bytes()
    # The weights are made by JAX and copied into torch; the JAX copies are freed right after,
    # so both sides count exactly one copy of each model.
    params = setup_lib.params(s)
    bench = torch_side.build(s.student, s.teacher, params, batch, s.dtype, platform,
                             inference=False)
    del params
    device_peak = lambda: torch_side.device_peak_bytes(bench.device)  # noqa: E731
  bench.train(1)
  # Compilation (JAX) and model construction (both) leave freed heap pages behind; returned to
  # the OS here, in both children alike, so the peak below is what the steps themselves hold.
  peak.release_freed_memory()
  with peak.RssSampler() as sampler:
    bench.train(spec["iters"])
  return {"framework": spec["framework"], "baseline_bytes": base,
          "step_peak_bytes": sampler.peak - base,
          "process_peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
          "device_peak_bytes": device_peak(),
          "xla_planned_bytes": getattr(bench, "xla_memory_bytes", None)}


if __name__ == "__main__":
  # Allocate on demand (GPU), so the device peak is what the step uses, not a preallocation.
  import os
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
  print(json.dumps(_measure(json.loads(sys.argv[1]))))
