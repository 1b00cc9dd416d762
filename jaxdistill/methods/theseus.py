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

How it plugs into the trainer: `Theseus` is the composite method (its loss is the weighted
terms, `hard_ce` alone in configs/theseus.py) with two hooks overridden, `student_forward`
(the mixed pass) and `optimizer_labels`, and its `stages`. The student is built from the teacher checkpoint
(student.init = "layers", student.source empty), so `trainable["student"]` is the whole
successor model: a plain BertModel with n layers that evaluation, checkpoints and export use
as they are. `student_labels` marks everything but its layers "frozen" (optax.set_to_zero, no
optimizer state); the mixed forward never reads those copies, so they stay equal to the
predecessor's. Only the drawn branch is computed: one `jax.lax.cond` per module, whose
predicate comes from the step's replicated key (the named stream "theseus/mask") inside the
jitted SPMD program, so every device draws the same modules.

Stages (`Theseus.stages`, run by jaxdistill/pipeline.py): with theseus.finetune_epochs > 0,
module replacing runs in <workdir>/replacing and the successor is then fine-tuned alone in
<workdir>; otherwise replacing is the whole run.
"""

from __future__ import annotations

import logging

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdistill.core import rng
from jaxdistill.core.outputs import BertOutput, Collect
from jaxdistill.methods.base import Models, register
from jaxdistill.methods.distill import Distill
from jaxdistill.models import BertModel

log = logging.getLogger(__name__)

CONFIG = dict(scheduler="constant", rate=0.5, linear_k=0.0, finetune_epochs=0, finetune_lr=0.0)
SCHEDULERS = ("constant", "linear")


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
  """[n] bools, True = successor: one draw per module for the whole batch, from the step's
  named stream "theseus/mask" (a function of (seed, step), sharing no bits with dropout)."""
  return jax.random.bernoulli(rng.named(step_key, "theseus", "mask"), rate, (num_modules,))


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
  Dropout keys match BertModel's, so take = all True reproduces the successor model; the
  predecessor's layers draw from the named stream "theseus/predecessor".
  """
  if collect.attention_scores or collect.attention_probs or collect.qkv:
    raise ValueError("BERT-of-Theseus mixes modules of different depths; loss terms reading "
                     "attention internals cannot be combined with it (hidden states can)")
  n = len(successor.layers)
  r = check_depths(n, len(predecessor.layers))
  mask = (jnp.ones_like(input_ids) if attention_mask is None else attention_mask).astype(bool)
  pred_key = None if dropout_key is None else rng.named(dropout_key, "theseus", "predecessor")
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


@register("theseus")
class Theseus(Distill):
  """Module replacing: the composite's loss over a mixed predecessor/successor forward."""

  def __init__(self, config):
    super().__init__(config)
    check_config(config)

  @classmethod
  def stages(cls, config) -> list[dict]:
    """Replacing in <workdir>/replacing, then plain fine-tuning of the whole successor model
    (all of its params) in <workdir>, when theseus.finetune_epochs > 0."""
    t = config.theseus
    if t.finetune_epochs <= 0:
      return []
    successor = {"method": "finetune", "report.label": "theseus",
                 "student.source": "@stage:replacing",
                 "student.init": "pretrained", "student.layers": (),
                 **{f"losses.{k}": 0.0 for k in config.losses}, "losses.hard_ce": 1.0,
                 "train.epochs": int(t.finetune_epochs),
                 "optim.lr": float(t.finetune_lr or config.optim.lr)}
    return [{"name": "replacing", "set": {"theseus.finetune_epochs": 0, "report.export": True,
                                          "report.compression": False}},
            {"name": "successor", "set": successor}]

  def teacher_use(self) -> str:
    use = super().teacher_use()
    return "params" if use in ("none", "logits") else use  # the predecessor's params, always

  def reads_teacher_logits(self) -> bool:
    return True  # the predecessor's classifier is the mixed model's

  def teacher_cacheable(self) -> bool:
    return False  # the student forward runs the predecessor's layers on a fresh mask each step

  def setup(self, run) -> None:
    super().setup(run)
    if run.teacher_cfg is None:
      raise ValueError("BERT-of-Theseus needs the fine-tuned teacher as predecessor; set teacher.source")
    check_depths(run.student_cfg.num_layers, run.teacher_cfg.num_layers)
    if run.student_cfg.hidden_size != run.teacher_cfg.hidden_size:
      raise ValueError(f"BERT-of-Theseus: successor width {run.student_cfg.hidden_size} != predecessor "
                       f"width {run.teacher_cfg.hidden_size}; modules must be interchangeable")

  def student_forward(self, models: Models, trainable, teacher_params, batch, key, step) -> BertOutput:
    predecessor = jax.lax.stop_gradient(teacher_params[0])  # the predecessor is frozen
    accum = max(1, self.config.optim.grad_accum)
    rate = replacing_rate(self.config.theseus, step // accum)  # t counts optimizer steps
    take = module_mask(key, rate, self.run.student_cfg.num_layers)
    return mixed_forward(nnx.merge(models.student_graph, trainable["student"]),
                         nnx.merge(models.teacher_graphs[0], predecessor),
                         batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                         take, dropout_key=key, collect=self.collect()[0])

  def optimizer_labels(self, trainable: dict) -> dict:
    """While replacing, the successor layers train; the rest of the student is "frozen"."""
    labels = super().optimizer_labels(trainable)
    labels["student"] = student_labels(trainable["student"])
    return labels


def student_labels(student_tree: dict) -> dict:
  return {k: jax.tree.map(lambda _: "student" if k == "layers" else "frozen", v)
          for k, v in student_tree.items()}
