"""The machine's measured matmul peak, and peak memory of a short run.

Peak FLOP/s is measured, not taken from a datasheet: one large square matmul in each framework
(a jitted `jnp.dot`, `torch.mm`), best of a few calls. The benchmark measures it once per round,
between the train steps, so the MFU of a round is against the peak of that same round (the
machine is shared, and its speed drifts). The larger of the two frameworks' figures is "the
machine's peak": neither framework may claim MFU against a slower matmul of its own.

Peak memory is the peak resident set size of the process, sampled every millisecond from
/proc/self/statm by a background thread while steps run, minus the RSS before the models
were built. Each framework is measured in its own child process (memory.py), so neither
sees the other's allocations; on a GPU the device allocator's own peak is read instead.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable


def matmul_size(platform: str) -> int:
  # Big enough to be compute-bound (2 * n^3 = 17 GFLOP on CPU); small enough to time in < 1 s.
  return 2048 if platform == "cpu" else 8192


def jax_matmul(platform: str, dtype: str = "float32") -> Callable[[], float]:
  """Returns measure() -> GFLOP/s of one jitted n x n matmul (compiled on creation)."""
  import jax
  import jax.numpy as jnp
  n = matmul_size(platform)
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.dtype(dtype))
  b = jax.random.normal(jax.random.key(1), (n, n), jnp.dtype(dtype))
  dot = jax.jit(lambda x, y: jnp.dot(x, y, preferred_element_type=jnp.dtype(dtype)))
  dot(a, b).block_until_ready()

  def measure() -> float:
    t = time.perf_counter()
    dot(a, b).block_until_ready()
    return 2 * n ** 3 / (time.perf_counter() - t) / 1e9

  return measure


def torch_matmul(device: str, dtype: str = "float32") -> Callable[[], float]:
  import torch
  n = matmul_size("cpu" if device == "cpu" else "gpu")
  tdtype = getattr(torch, dtype)
  a = torch.randn(n, n, device=device).to(tdtype)
  b = torch.randn(n, n, device=device).to(tdtype)
  sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
  torch.mm(a, b)
  sync()

  def measure() -> float:
    t = time.perf_counter()
    torch.mm(a, b)
    sync()
    return 2 * n ** 3 / (time.perf_counter() - t) / 1e9

  return measure


def best_of(measure: Callable[[], float], repeats: int = 3) -> float:
  return max(measure() for _ in range(repeats))


# ---- memory --------------------------------------------------------------------------------

def release_freed_memory() -> None:
  """glibc's malloc_trim: hands memory that was freed (e.g. by XLA's compiler after a compile)
  back to the OS, so the RSS afterwards counts what is still in use. A no-op elsewhere."""
  try:
    import ctypes
    ctypes.CDLL("libc.so.6").malloc_trim(0)
  except (OSError, AttributeError):
    pass


def rss_bytes() -> int:
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RssSampler:
  """Peak RSS while the `with` block runs, sampled every `interval_s` by a daemon thread.

  The thread only reads a /proc file and sleeps, so it costs the measured work almost nothing
  (both frameworks release the GIL inside their kernels)."""

  def __init__(self, interval_s: float = 0.001):
    self.interval_s = interval_s
    self.peak = 0
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, daemon=True)

  def _run(self):
    while not self._stop.is_set():
      self.peak = max(self.peak, rss_bytes())
      time.sleep(self.interval_s)

  def __enter__(self) -> "RssSampler":
    self.peak = rss_bytes()
    self._thread.start()
    return self

  def __exit__(self, *exc):
    self._stop.set()
    self._thread.join()
    self.peak = max(self.peak, rss_bytes())
