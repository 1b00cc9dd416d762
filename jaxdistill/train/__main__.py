"""python -m jaxdistill.train --config configs/kd.py[:tiny] --workdir runs/kd [--config.a.b=v ...]

The command line: parses and checks the config (no JAX imported yet, so a bad key fails in
well under a second), then sets the process-wide state a run wants (logging, glibc malloc,
the XLA compilation cache, jax.distributed), then runs the pipeline. Multi-process runs start
this same command in every process (see jaxdistill/distributed.py and launch/).
"""

from __future__ import annotations

import argparse
import ast
import logging
import os
import sys

from pathlib import Path

from jaxdistill import data as data_lib
from jaxdistill import run_dir
from jaxdistill.config_lib import ConfigError, apply_overrides, load_config, parse_overrides


def cache_root() -> str:
  return os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "jaxdistill")


def enable_compilation_cache(jax) -> None:
  """Keeps compiled XLA programs on disk: a resumed run, the next stage or the next method
  with the same shapes skips compilation (tens of seconds on a CPU)."""
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.join(cache_root(), "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def setup_logging() -> None:
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  for noisy in ("absl", "orbax", "jax._src", "httpx", "datasets"):
    logging.getLogger(noisy).setLevel(logging.WARNING)


def configs_epilog(directory: str = "configs") -> str:
  """The configs under ./configs with the first line of each one's docstring."""
  lines = []
  for p in sorted(Path(directory).glob("*.py")):
    doc = ast.get_docstring(ast.parse(p.read_text(encoding="utf-8"))) or ""
    lines.append(f"  {p.as_posix():32s} {doc.splitlines()[0] if doc else ''}")
  where = ("Every key, its default and a comment: jaxdistill/config_lib.py (base_config); "
           "methods and stages: docs/methods.md, docs/architecture.md. Every config has a "
           ":tiny variant (seconds-long test run).")
  return ("configs:\n" + "\n".join(lines) + "\n\n" if lines else "") + where


def validate(config) -> None:
  """Checks what can be checked before any work, so a bad value fails at once with exit 2:
  the data section (task name, columns given, files present)."""
  if not config.stages:  # a stage may set its own data (e.g. a corpus an earlier stage writes)
    data_lib.make_source(config.data)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxdistill.train", description=__doc__,
                                   epilog=configs_epilog(),
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--config", required=True, help="configs/<name>.py[:variant]")
  parser.add_argument("--workdir", default="", help="run directory (default runs/<config name>)")
  args, rest = parser.parse_known_args(argv)
  setup_logging()
  try:
    config = load_config(args.config)
    apply_overrides(config, parse_overrides(rest))
    validate(config)
  except (ConfigError, data_lib.DataError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  workdir = args.workdir or os.path.join("runs", config.name)
  try:  # this run, already finished: its report, in a fraction of a second (no JAX import)
    finished = run_dir.finished_report(config, workdir)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  if finished:
    print(finished)
    return 0
  # Heavy imports and process-wide settings: only now that the config is known to be good.
  import jax  # noqa: PLC0415  (after the checks: a bad flag must not wait for JAX)

  from jaxdistill import distributed, host_memory, pipeline  # noqa: PLC0415
  host_memory.keep_freed_memory()  # XLA CPU buffers are reused instead of faulted in each step
  enable_compilation_cache(jax)
  try:  # multi-process runs connect before any JAX computation
    distributed.initialize(config)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  try:
    pipeline.run(config, workdir)
  except (ValueError, FileNotFoundError, ImportError) as e:
    if os.environ.get("JAXDISTILL_TRACEBACK"):
      raise
    print(f"error: {e}  (set JAXDISTILL_TRACEBACK=1 for the traceback)", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
