"""The jaxdistill side of the benchmark: the trainer's own jitted distillation step.

Nothing here is a benchmark-only model or step: `make_train_step` from jaxdistill/train/step.py
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

from jaxdistill import losses
from jaxdistill.models import BertConfig, Collect, hub
from jaxdistill.train import sharding, step as step_lib, terms
from jaxdistill.train.term_types import Inputs, Term

# TinyBERT's uniform layer map: student layer m = 1..M reads teacher layer m * (L_t / L_s),
# for the layer outputs (hidden_states[m]) and the pre-softmax scores (attention_scores[m - 1]).
HIDDEN_TERM, ATTENTION_TERM = "tinybert_hidden", "tinybert_attention"


def _bench_hidden(x: Inputs):
  k = x.teacher_cfg.num_layers // x.student_cfg.num_layers
  return sum(losses.tinybert_hidden_loss(
      x.student.hidden_states[m], x.teacher.hidden_states[m * k], x.batch["attention_mask"],
      projection_kernel=x.aux.get("kernel"), projection_bias=x.aux.get("bias"),
      example_weight=x.batch["example_weight"]) for m in range(1, x.student_cfg.num_layers + 1))


def _bench_attention(x: Inputs):
  k = x.teacher_cfg.num_layers // x.student_cfg.num_layers
  return sum(losses.tinybert_attention_loss(
      x.student.attention_scores[m - 1], x.teacher.attention_scores[m * k - 1],
      x.batch["attention_mask"], example_weight=x.batch["example_weight"])
      for m in range(1, x.student_cfg.num_layers + 1))


def register_terms() -> tuple[str, str]:
  """The TinyBERT terms of jaxdistill/methods/tinybert.py (uniform layer map, the default of
  config.tinybert). Should that module not define them, bench-local stand-ins built from the
  same jaxdistill.losses functions and map (registered in this process only, before any
  config is built, so `config.losses.<name>` exists)."""
  if HIDDEN_TERM in terms.TERMS and ATTENTION_TERM in terms.TERMS:
    return HIDDEN_TERM, ATTENTION_TERM
  both = Collect(hidden_states=True, attention_scores=True)
  terms.TERMS.setdefault("bench_hidden", Term(
      _bench_hidden, student=Collect(hidden_states=True), teacher=Collect(hidden_states=True),
      init_aux=terms._init_projection, doc="benchmark: TinyBERT hidden MSE, uniform map"))
  terms.TERMS.setdefault("bench_attention", Term(
      _bench_attention, student=Collect(attention_scores=True), teacher=both,
      doc="benchmark: TinyBERT attention-score MSE, uniform map"))
  return "bench_hidden", "bench_attention"


def make_config(batch: int, dtype: str, seed: int = 0):
  hidden, attention = register_terms()
  from jaxdistill import config_lib  # after register_terms: base_config reads the registry
  c = config_lib.base_config()
  c.method = "tinybert-style"
  c.seed = seed
  c.losses.hard_ce = 1.0
  c.losses.kd = 1.0
  c.losses[hidden] = 1.0
  c.losses[attention] = 1.0
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
  from jaxdistill.bench.flops import xla_flops
  config = make_config(batch, dtype, seed)
  mesh = step_lib.make_mesh(config)
  s_params, t_params = params or (random_params(student, seed), random_params(teacher, seed + 1))
  tx = step_lib.make_optimizer(config, total_steps=100_000)
  aux = terms.init_aux(jax.random.key(seed), config, student, teacher)
  state_sh, teacher_sh = step_lib.train_shardings(config, mesh, student, teacher, tx)
  state = jax.device_put(step_lib.init_state(config, s_params, aux, tx), state_sh)
  t_params = jax.device_put(t_params, teacher_sh)
  data = jax.device_put(synthetic_batch(batch, seq, student.vocab_size, seed),
                        NamedSharding(mesh, sharding.BATCH))

  step_fn = step_lib.make_train_step(config, mesh, student, teacher, tx)
  t0 = time.perf_counter()
  compiled = step_fn.lower(state, t_params, data).compile()
  compile_s = time.perf_counter() - t0
  holder = {"state": state, "loss": None}

  def train(n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
      holder["state"], metrics = compiled(holder["state"], t_params, data)
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

