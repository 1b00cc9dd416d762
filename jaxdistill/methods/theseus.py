"""BERT-of-Theseus: compressing BERT by progressive module replacing (Xu et al., EMNLP 2020).

The fine-tuned teacher is the *predecessor*: its L layers are split into n modules of
r = L / n consecutive layers, and each module i gets a one-layer *successor* s_i. Every
training step draws, per module, one Bernoulli shared by the whole batch,

    z_i ~ Bernoulli(p),   y_i = z_i * s_i(y_{i-1}) + (1 - z_i) * pred_i(y_{i-1}),

and trains on the task loss alone (no distillation loss). The replacement rate p is constant
or the linear curriculum p_t = min(1, k * t + b) (t = optimizer steps taken). Afterwards the
successor modules are fine-tuned together as one n-layer model (`theseus.finetune_epochs`).

Choices, checked against the authors' code (JetRunner/BERT-of-Theseus, run_glue.py and
bert_of_theseus/modeling_bert_of_theseus.py):
- Embeddings, pooler and classifier are the predecessor's, shared and frozen while replacing:
  the authors' optimizer holds `encoder.scc_layer` parameters only. The mixed forward reads
  them from the teacher slot, and only the successor layers get updates.
- Successor layer i starts as a copy of a predecessor layer; the authors copy the first n
  layers (`layer[ix] for ix in range(scc_n_layer)`), which configs/theseus.py follows with
  student.layers = (0, 1, 2); (0, 2, 4) starts each module from its own first layer.
- Dropout is on in both branches (the predecessor runs in train mode there too).

How it plugs into the trainer: the student is built from the teacher checkpoint
(student.init = "layers", student.source empty), so `trainable["student"]` is the whole
successor model: a plain BertModel with n layers that evaluation, checkpoints and export use
as they are. `student_labels` marks everything but its layers "frozen" (optax.set_to_zero, no
optimizer state); the mixed forward never reads those copies, so they stay equal to the
predecessor's. Only the drawn branch is computed: one `jax.lax.cond` per module, whose
predicate comes from the step's replicated key inside the jitted SPMD program, so every
device draws the same modules.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdistill.models import BertConfig, BertModel, BertOutput, Collect

log = logging.getLogger(__name__)

MASK_STREAM = 0x7E5E05       # fold_in tag of the module-mask stream (dropout uses 0..L, 10_000)
PREDECESSOR_STREAM = 20_000  # fold_in tag of the predecessor layers' dropout keys
SCHEDULERS = ("constant", "linear")


def enabled(config) -> bool:
  return "theseus" in config and bool(config.theseus.enabled)


def replacing_rate(tcfg, t) -> jax.Array:
  """p_t: `rate` (constant), or min(1, linear_k * t + rate) (linear curriculum)."""
  if tcfg.scheduler not in SCHEDULERS:
    raise ValueError(f"theseus.scheduler={tcfg.scheduler!r}; use one of {', '.join(SCHEDULERS)}")
  t = jnp.asarray(t, jnp.float32)
  p = jnp.full((), tcfg.rate, jnp.float32)
  if tcfg.scheduler == "linear":
    p = p + jnp.float32(tcfg.linear_k) * t
  return jnp.clip(p, 0.0, 1.0)


def module_mask(step_key: jax.Array, rate, num_modules: int) -> jax.Array:
  """[n] bools, True = successor: one draw per module for the whole batch.

  A stream of its own (fold_in of the step key), so the draw is a function of (seed, step)
  and does not share bits with dropout."""
  return jax.random.bernoulli(jax.random.fold_in(step_key, MASK_STREAM), rate, (num_modules,))


def check_depths(num_successor: int, num_predecessor: int) -> int:
  """r, the predecessor layers per successor module; a one-line error if n does not divide L."""
  if num_successor < 1 or num_predecessor % num_successor:
    divisors = [d for d in range(1, num_predecessor + 1) if num_predecessor % d == 0]
    raise ValueError(f"BERT-of-Theseus: the predecessor's {num_predecessor} layers do not split "
                     f"into {num_successor} equal modules; give the successor a depth in "
                     f"{divisors} (set student.layers to that many teacher layers)")
  return num_predecessor // num_successor


def _fold(key, i):
  return None if key is None else jax.random.fold_in(key, i)


def mixed_forward(successor: BertModel, predecessor: BertModel, input_ids, attention_mask,
                  token_type_ids, take: jax.Array, *, dropout_key=None,
                  collect: Collect = Collect()) -> BertOutput:
  """The predecessor with module i replaced by successor layer i where take[i] is True.

  hidden_states (when collected) are the embeddings and each module's output (n + 1).
  Dropout keys match BertModel's, so take = all True reproduces the successor model.
  """
  if collect.attention_scores or collect.attention_probs or collect.qkv:
    raise ValueError("BERT-of-Theseus mixes modules of different depths; loss terms reading "
                     "attention internals cannot be combined with it (hidden states can)")
  n = len(successor.layers)
  r = check_depths(n, len(predecessor.layers))
  mask = (jnp.ones_like(input_ids) if attention_mask is None else attention_mask).astype(bool)
  pred_key = _fold(dropout_key, PREDECESSOR_STREAM)
  h = predecessor.embed(input_ids, token_type_ids, dropout_key=_fold(dropout_key, 0))
  hidden = [h]
  for i in range(n):
    def run_successor(h, i=i):
      return successor.layers[i](h, mask, dropout_key=_fold(dropout_key, i + 1))[0]

    def run_predecessor(h, i=i):
      for j in range(i * r, (i + 1) * r):
        h = predecessor.layers[j](h, mask, dropout_key=_fold(pred_key, j + 1))[0]
      return h

    # A real branch, not a select: only the drawn module runs (forward and backward).
    h = jax.lax.cond(take[i], run_successor, run_predecessor, h)
    hidden.append(h)
  pooled, logits = predecessor.head(h, dropout_key=_fold(dropout_key, 10_000))
  return BertOutput(last_hidden=h, pooled=pooled, logits=logits,
                    hidden_states=tuple(hidden) if collect.hidden_states else None)


def check_config(config) -> None:
  s = config.student
  if s.init != "layers" or s.source not in ("", config.teacher.source):
    raise ValueError("BERT-of-Theseus builds the successor from the predecessor's layers: set "
                     "student.init='layers', student.layers to the layers to copy, and leave "
                     "student.source empty (the teacher)")
  t = config.theseus
  replacing_rate(t, 0)  # validates the scheduler name
  if not 0.0 <= t.rate <= 1.0 or t.linear_k < 0:
    raise ValueError(f"theseus.rate={t.rate} must be in [0, 1] and theseus.linear_k={t.linear_k} >= 0")


def make_replacing_forward(config, s_graph, t_graph, student_cfg: BertConfig,
                           teacher_cfg: Optional[BertConfig]) -> Callable:
  """(student_params, teacher_params, batch, key, step, collect) -> BertOutput, for the step."""
  check_config(config)
  if teacher_cfg is None:
    raise ValueError("BERT-of-Theseus needs the fine-tuned teacher as predecessor; set teacher.source")
  check_depths(student_cfg.num_layers, teacher_cfg.num_layers)
  if student_cfg.hidden_size != teacher_cfg.hidden_size:
    raise ValueError(f"BERT-of-Theseus: successor width {student_cfg.hidden_size} != predecessor "
                     f"width {teacher_cfg.hidden_size}; modules must be interchangeable")
  tcfg, accum = config.theseus, max(1, config.optim.grad_accum)

  def forward(student_params, teacher_params, batch, key, step, collect):
    teacher_params = jax.lax.stop_gradient(teacher_params)  # the predecessor is frozen
    rate = replacing_rate(tcfg, step // accum)  # t counts optimizer steps, as the authors'
    take = module_mask(key, rate, student_cfg.num_layers)
    return mixed_forward(nnx.merge(s_graph, student_params), nnx.merge(t_graph, teacher_params),
                         batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                         take, dropout_key=key, collect=collect)

  return forward


def student_labels(student_tree: dict) -> dict:
  """Optimizer labels while replacing: the successor layers train, the rest is "frozen"."""
  return {k: jax.tree.map(lambda _: "student" if k == "layers" else "frozen", v)
          for k, v in student_tree.items()}


# ---- Stages: replacing (workdir/replacing), then successor fine-tuning (workdir) ------------
def replacing_config(config, teacher_source: str):
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.name = f"{config.name}_replacing"
    c.teacher.source, c.teacher.finetune = teacher_source, False
    c.theseus.finetune_epochs = 0
    c.report.export, c.report.compression = True, False  # stage 3 reads the export
  return c


def successor_finetune_config(config, teacher_source: str, successor_dir: str):
  """Plain hard-label fine-tuning of the whole successor model (all of its params)."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.theseus.enabled, c.theseus.finetune_epochs = False, 0
    c.student.source, c.student.init, c.student.layers = str(successor_dir), "pretrained", ()
    c.teacher.source, c.teacher.finetune = teacher_source, False  # for the compression report
    for k in c.losses:
      c.losses[k] = 0.0
    c.losses.hard_ce = 1.0
    c.train.epochs = config.theseus.finetune_epochs
    c.optim.lr = config.theseus.finetune_lr or config.optim.lr
  return c


def replacing_stage(config, workdir, teacher_source: str, run: Callable):
  """Runs module replacing in workdir/replacing (resumable, skipped once exported) when a
  successor fine-tuning follows; returns the config this run continues with."""
  if not enabled(config) or config.theseus.finetune_epochs <= 0:
    return config
  from jaxdistill.train.loop import DONE  # here: loop imports this module
  rdir = Path(workdir) / "replacing"
  if not (rdir / "export" / DONE).exists():
    log.info("stage 2: BERT-of-Theseus module replacing in %s", rdir)
    run(replacing_config(config, teacher_source), rdir)
  log.info("stage 3: fine-tuning the successor from %s", rdir / "export")
  return successor_finetune_config(config, teacher_source, rdir / "export")
