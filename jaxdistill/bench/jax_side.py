"""The jaxdistill side of the benchmark: the trainer's own jitted distillation step.

Nothing here is a benchmark-only model or step: `jit_train_step` from jaxdistill/train/step.py
is called with a config whose losses are the TinyBERT-style sum (hard CE + T^2 KL + hidden-state
MSE + attention-score MSE), exactly as `python -m jaxdistill.train` would build it, so what is
timed is what a user's run executes. Only the data is synthetic (random token ids, every token
real), so the timing does not depend on a dataset.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Callable, Optional

import jax
import numpy as np
from jax.sharding import NamedSharding

from jaxdistill import config_lib, methods
from jaxdistill.bench.flops import xla_flops
from jaxdistill.core.state import TeacherInputs
from jaxdistill.methods.base import RunInfo
from jaxdistill.models import BertConfig, hub
from jaxdistill.train import sharding, step as step_lib

def make_config(batch: int, dtype: str, seed: int = 0):
  """The TinyBERT-style sum of jaxdistill/methods/kd.py and tinybert.py's terms (uniform
  layer map, the default of config.tinybert), through the composite method."""
  c = config_lib.base_config("tinybert")
  c.seed = seed
  c.losses.hard_ce = 1.0
  c.losses.kd = 1.0
  c.losses.tinybert_hidden = 1.0
  c.losses.tinybert_attention = 1.0
  c.kd.temperature = 2.0
  c.train.batch_size = batch
  c.train.eval_batch_size = batch
  c.train.dtype = dtype
  return c


def random_params(cfg: BertConfig, seed: int) -> dict:
  """BertModel's initial values (N(0, 0.02) kernels, zero biases, unit scales) without building
  the module eagerly: hub.init_fresh on every path of the abstract parameter tree."""
  abstract = step_lib.abstract_params(cfg)
  like = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), abstract)
  names = [".".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)
           for path, _ in jax.tree_util.tree_leaves_with_path(abstract)]
  return hub.init_fresh(cfg, like, names, seed)


def synthetic_batch(batch: int, seq: int, vocab: int, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  return {
      "input_ids": rng.integers(1000, vocab, (batch, seq)).astype(np.int32),
      "attention_mask": np.ones((batch, seq), np.int32),
      "token_type_ids": np.zeros((batch, seq), np.int32),
      "labels": rng.integers(0, 2, (batch,)).astype(np.int32),
      "example_weight": np.ones((batch,), np.float32),
  }


@dataclasses.dataclass
class JaxBench:
  """Compiled train step and predict functions, ready to time."""
  train: Callable[[int], float]        # run n steps, block, return seconds
  infer_teacher: Optional[Callable[[int], float]]  # None when built without inference
  infer_student: Optional[Callable[[int], float]]
  compile_s: float                     # lowering + XLA compilation of the train step
  xla_flops: float | None
  loss: Callable[[], float]            # the last step's loss (a sanity figure)
  platform: str
  xla_memory_bytes: Optional[int] = None  # XLA's buffer plan: arguments + outputs - aliased + temps


def build(student: BertConfig, teacher: BertConfig, batch: int, seq: int, dtype: str,
          params: tuple[dict, dict] | None = None, seed: int = 0,
          inference: bool = True) -> JaxBench:
  config = make_config(batch, dtype, seed)
  mesh = step_lib.make_mesh(config)
  s_params, t_params = params or (random_params(student, seed), random_params(teacher, seed + 1))
  method = methods.get(config)
  method.setup(RunInfo(student, (teacher,), total_steps=100_000))
  tx = step_lib.make_optimizer(config, 100_000, step_lib.optimizer_labels(config, method))
  models = step_lib.models_of(student, (teacher,))
  state_sh = step_lib.state_sharding(config, mesh, method, student, tx)
  teacher_sh = step_lib.teacher_shardings(mesh, (teacher,), sharding.rules_of(config), cached=False)
  state = jax.device_put(step_lib.init_state(s_params, method.init_params(seed), tx), state_sh)
  teacher_in = jax.device_put(TeacherInputs((t_params,), None), teacher_sh)
  t_params = teacher_in.params[0]
  data = jax.device_put(synthetic_batch(batch, seq, student.vocab_size, seed),
                        NamedSharding(mesh, sharding.BATCH))

  step_fn = step_lib.jit_train_step(config, mesh, method, models, tx, cached=False)
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, teacher_in, data).compile()
  compile_s = time.perf_counter() - t0
  holder = {"state": state, "loss": None}

  def train(n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
      holder["state"], metrics = compiled(holder["state"], teacher_in, data)
    holder["loss"] = metrics["loss"]
    jax.block_until_ready(holder["state"])
    return time.perf_counter() - t

  def timer(cfg, params_, role):
    if not inference:  # the memory probe builds the train step alone
      return None
    params_ = jax.device_put(params_)
    fn = step_lib.make_predict(mesh, cfg, role=role).lower(params_, data).compile()

    def run(n: int) -> float:
      t = time.perf_counter()
      for _ in range(n):
        out = fn(params_, data)
      jax.block_until_ready(out)
      return time.perf_counter() - t
    return run

  return JaxBench(train=train, infer_teacher=timer(teacher, t_params, "teacher"),
                  infer_student=timer(student, s_params, "student"), compile_s=compile_s,
                  xla_flops=xla_flops(compiled), loss=lambda: float(holder["loss"]),
                  platform=jax.devices()[0].platform, xla_memory_bytes=planned_bytes(compiled))


def planned_bytes(compiled) -> Optional[int]:
  """The memory XLA's buffer assignment plans for one call of the compiled step: its
  arguments and outputs (donated outputs reuse their argument's buffer) plus temporaries."""
  try:
    m = compiled.memory_analysis()
    return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes
               + m.temp_size_in_bytes)
  except Exception:  # noqa: BLE001  (backends without a memory analysis)
    return None


def device_peak_bytes() -> int | None:
  """The device allocator's peak (GPU/TPU); None on CPU, where memory.py reads the RSS."""
  stats = jax.devices()[0].memory_stats()
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None

