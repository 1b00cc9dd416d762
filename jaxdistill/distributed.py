"""Multi-process runs on JAX's own distributed runtime (`jax.distributed`).

Every process runs the same command; `initialize(config)` connects them before any JAX
computation, after which `jax.devices()` lists every process's devices and the one train
step spans them all. It connects when

- a coordinator is named: `distributed.coordinator` ("host:port" of process 0) with
  `distributed.num_processes` and `distributed.process_id`, or the environment variables
  JAXDISTILL_COORDINATOR, JAXDISTILL_NUM_PROCESSES, JAXDISTILL_PROCESS_ID;
- `distributed.initialize="always"`: `jax.distributed.initialize()` without arguments, which
  finds everything itself on Cloud TPU pods and clusters JAX knows (SLURM, Open MPI, ...);
- `distributed.initialize="auto"` (the default) and this is one task of a multi-task SLURM
  step (srun); else the run stays single-process. "never" turns all of this off.

Only process 0 writes logs, reports and exports (`is_main`); every process takes part in
checkpointing, which orbax coordinates (the workdir must be on a filesystem all hosts share).
"""

from __future__ import annotations

import logging
import os
from typing import Mapping, Optional

import jax
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)
MODES = ("auto", "always", "never")
SLURM_VARS = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
  text = env.get(name, "")
  if not text:
    return default
  try:
    return int(text)
  except ValueError:
    raise ValueError(f"{name}={text!r} is not an integer") from None


def in_slurm_step(env: Mapping[str, str] = os.environ) -> bool:
  """Whether this process is one of several tasks srun started (JAX reads the rest itself)."""
  return all(v in env for v in SLURM_VARS) and _int(env, "SLURM_NTASKS", 1) > 1


def plan(config, env: Mapping[str, str] = os.environ) -> Optional[dict]:
  """The keyword arguments for `jax.distributed.initialize`, or None for a single process."""
  d = config.distributed
  if d.initialize not in MODES:
    raise ValueError(f"distributed.initialize={d.initialize!r}; use one of {', '.join(MODES)}")
  if d.initialize == "never":
    return None
  coordinator = d.coordinator or env.get("JAXDISTILL_COORDINATOR", "")
  if coordinator:
    n = d.num_processes or _int(env, "JAXDISTILL_NUM_PROCESSES", 0)
    pid = d.process_id if d.process_id >= 0 else _int(env, "JAXDISTILL_PROCESS_ID", -1)
    if n < 1 or not 0 <= pid < n:
      raise ValueError(f"coordinator {coordinator} needs distributed.num_processes >= 1 and "
                       f"0 <= distributed.process_id < num_processes (got {n} and {pid}); or set "
                       "JAXDISTILL_NUM_PROCESSES and JAXDISTILL_PROCESS_ID")
    return dict(coordinator_address=coordinator, num_processes=n, process_id=pid,
                initialization_timeout=d.timeout_s)
  if d.initialize == "always" or in_slurm_step(env):
    return dict(initialization_timeout=d.timeout_s)
  return None


def initialize(config) -> bool:
  """Connects this process to the others when the config or environment says so (see the
  module docstring); returns whether it did. Call before any JAX computation."""
  kwargs = plan(config)
  if kwargs is None:
    return False
  # Cross-process collectives on CPU (tests, CPU clusters) go through gloo.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(**kwargs)
  log.info("process %d of %d; %d local and %d global devices", jax.process_index(),
           jax.process_count(), jax.local_device_count(), jax.device_count())
  return True


def is_main() -> bool:
  """Whether this process writes the run's logs, reports and exports."""
  return jax.process_index() == 0


def sync(name: str) -> None:
  """Waits until every process gets here (a no-op in a single-process run)."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)
