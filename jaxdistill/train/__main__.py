"""python -m jaxdistill.train --config configs/kd.py[:tiny] --workdir runs/kd [--config.a.b=v ...]

Multi-process runs start this same command in every process (see jaxdistill/distributed.py
and launch/)."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from jaxdistill.config_lib import ConfigError, apply_override, load_config, parse_overrides


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m jaxdistill.train", description=__doc__)
  parser.add_argument("--config", required=True, help="configs/<name>.py[:variant]")
  parser.add_argument("--workdir", default="", help="run directory (default runs/<config name>)")
  args, rest = parser.parse_known_args(argv)
  logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
  for noisy in ("absl", "orbax", "jax._src", "httpx", "datasets"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
  try:
    config = load_config(args.config)
    for key, value in parse_overrides(rest):
      apply_override(config, key, value)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  workdir = args.workdir or os.path.join("runs", config.name)
  from jaxdistill import distributed, host_memory
  host_memory.keep_freed_memory()  # XLA CPU buffers are reused instead of faulted in each step
  try:  # multi-process runs connect before any JAX computation
    distributed.initialize(config)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  from jaxdistill.train.loop import train_and_evaluate  # after arg checks: imports JAX
  try:
    train_and_evaluate(config, workdir)
  except (ValueError, FileNotFoundError, ImportError) as e:
    if os.environ.get("JAXDISTILL_TRACEBACK"):
      raise
    print(f"error: {e}  (set JAXDISTILL_TRACEBACK=1 for the traceback)", file=sys.stderr)
    return 1
  return 0


if __name__ == "__main__":
  sys.exit(main())
