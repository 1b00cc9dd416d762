"""The optimizer and the jitted SPMD train and eval steps.

The step is one `jax.jit` program over a (data, fsdp) `Mesh` (jaxdistill/train/sharding.py):
the batch is sharded over both axes, parameters and optimizer state are replicated or, with
mesh.fsdp > 1, sharded over `fsdp` by the config's rules, and XLA inserts the collectives
(gradient all-reduce, parameter all-gathers). The same program runs on one device or many,
on one process or many. Only the trainable tree ({"student": ..., "aux": ...}) is
differentiated and optimised; the teacher's params are a separate, never-donated argument
under stop_gradient.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxdistill.methods import theseus
from jaxdistill.models import BertConfig, BertOutput, registry
from jaxdistill.train import sharding, terms
from jaxdistill.train.sharding import make_mesh  # noqa: F401  (re-exported)


class TrainState(NamedTuple):
  step: jax.Array       # int32 scalar: optimizer steps taken (micro-steps with grad_accum)
  trainable: dict       # {"student": params, "aux": {term: params}}
  opt_state: optax.OptState


def graphdef_of(cfg: BertConfig):
  """The model's static structure, without initialising any weights."""
  return nnx.graphdef(nnx.eval_shape(lambda: registry.model_class(cfg)(cfg, rngs=nnx.Rngs(0))))


def abstract_params(cfg: BertConfig) -> dict:
  """The model's parameter tree as ShapeDtypeStructs (nothing allocated)."""
  model = nnx.eval_shape(lambda: registry.model_class(cfg)(cfg, rngs=nnx.Rngs(0)))
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def train_shardings(config, mesh: Mesh, student_cfg: BertConfig, teacher_cfg: Optional[BertConfig], tx):
  """(train state, teacher params) NamedShardings for this config's models and optimizer."""
  aux = jax.eval_shape(lambda: terms.init_aux(jax.random.key(0), config, student_cfg, teacher_cfg))
  state = jax.eval_shape(lambda p, a: init_state(config, p, a, tx), abstract_params(student_cfg), aux)
  rules = sharding.rules_of(config)
  teacher = (sharding.param_shardings(mesh, abstract_params(teacher_cfg), rules, role="teacher")
             if teacher_cfg is not None else None)
  return sharding.state_shardings(mesh, state, rules), teacher


def _schedule(lr: float, total_steps: int, warmup_ratio: float):
  warmup = max(1, int(total_steps * warmup_ratio))
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup),
       optax.linear_schedule(lr, 0.0, max(1, total_steps - warmup))], [warmup])


def make_optimizer(config, total_steps: int) -> optax.GradientTransformation:
  """AdamW with warmup and linear decay, global-norm clipping, optional accumulation.

  Method parameters (`aux`, e.g. projections or LAD gates) get their own learning rate.
  Biases and LayerNorm parameters (1-D) are not weight-decayed, as in BERT.
  """
  o = config.optim

  def adamw(lr):
    return optax.adamw(_schedule(lr, total_steps, o.warmup_ratio), b1=o.b1, b2=o.b2, eps=o.eps,
                       weight_decay=o.weight_decay, mask=lambda t: jax.tree.map(lambda x: x.ndim > 1, t))

  tx = optax.chain(
      optax.clip_by_global_norm(o.clip_norm) if o.clip_norm > 0 else optax.identity(),
      optax.multi_transform({"student": adamw(o.lr), "aux": adamw(o.aux_lr or o.lr),
                             "frozen": optax.set_to_zero()}, lambda tree: _labels(config, tree)))
  if o.grad_accum > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=o.grad_accum)
  return tx


def _labels(config, tree: dict) -> dict:
  labels = {k: jax.tree.map(lambda _: k, v) for k, v in tree.items()}
  if theseus.enabled(config):  # module replacing trains the successor layers alone
    labels["student"] = theseus.student_labels(tree["student"])
  only = [re.compile(p) for p in config.optim.train_only]
  frozen = [re.compile(p) for p in config.optim.freeze]
  if only or frozen:  # e.g. MobileBERT's layer-wise stages, an MLM head fitted alone

    def label(path, current):
      name = sharding.path_name(path)
      if (only and not any(p.search(name) for p in only)) or any(p.search(name) for p in frozen):
        return "frozen"
      return current

    labels = jax.tree_util.tree_map_with_path(label, labels)
  return labels


def make_train_step(config, mesh: Mesh, student_cfg: BertConfig, teacher_cfg: Optional[BertConfig],
                    tx: optax.GradientTransformation):
  """Returns step(state, teacher_params, batch) -> (state, metrics), jitted with shardings."""
  s_graph = graphdef_of(student_cfg)
  t_graph = graphdef_of(teacher_cfg) if teacher_cfg is not None else None
  s_collect, t_collect = terms.collect_for(config)
  base_key = jax.random.key(config.seed)
  # BERT-of-Theseus: the student's forward is the predecessor with modules replaced.
  replacing = (theseus.make_replacing_forward(config, s_graph, t_graph, student_cfg, teacher_cfg)
               if theseus.enabled(config) else None)
  t_forward = t_graph is not None and terms.needs_teacher_outputs(config)

  def forward_pair(trainable, teacher_params, batch, key, step):
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    if replacing is not None:
      s_out = replacing(trainable["student"], teacher_params, batch, key, step, s_collect)
    else:
      s_out = nnx.merge(s_graph, trainable["student"])(ids, mask, types, dropout_key=key,
                                                       collect=s_collect)
    t_out = None
    if "teacher_logits" in batch:  # cached once per run (train.cache_teacher_logits)
      t_out = BertOutput(last_hidden=jnp.zeros(()), logits=batch["teacher_logits"])
    elif t_forward:
      t_out = nnx.merge(t_graph, teacher_params)(ids, mask, types, collect=t_collect)
      t_out = jax.lax.stop_gradient(t_out)
    return s_out, t_out

  def loss_fn(trainable, teacher_params, batch, key, step):
    batch = terms.prepare_batch(batch, key, config, student_cfg)  # e.g. MLM masking
    s_out, t_out = forward_pair(trainable, teacher_params, batch, key, step)

    def inputs(name):
      return terms.Inputs(s_out, t_out, batch, trainable["aux"].get(name, {}), config,
                          student_cfg, teacher_cfg, trainable["student"], teacher_params)

    return terms.total_loss(inputs, config)

  def step(state: TrainState, teacher_params, batch):
    key = jax.random.fold_in(base_key, state.step)  # the same key for the same step, always
    (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.trainable, teacher_params, batch, key, state.step)
    updates, opt_state = tx.update(grads, state.opt_state, state.trainable)
    trainable = optax.apply_updates(state.trainable, updates)
    grad_norm = optax.tree.norm(grads)
    # A NaN/Inf loss or gradient skips the update: params and optimizer state stay as they
    # were (the step counter still advances past the batch). The flag goes out with the
    # metrics, which the host reads only when it logs or checkpoints (train/preempt.py).
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    trainable, opt_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old),
                                        (trainable, opt_state), (state.trainable, state.opt_state))
    metrics = {"loss": loss, "grad_norm": grad_norm, "nonfinite": 1.0 - finite.astype(jnp.float32),
               **{f"loss/{k}": v for k, v in parts.items()}}
    return TrainState(state.step + 1, trainable, opt_state), metrics

  state_sharding, teacher_sharding = train_shardings(config, mesh, student_cfg, teacher_cfg, tx)
  replicated = NamedSharding(mesh, P())
  return jax.jit(step, in_shardings=(state_sharding, teacher_sharding or replicated,
                                     NamedSharding(mesh, sharding.BATCH)),
                 out_shardings=(state_sharding, replicated), donate_argnums=(0,))


def make_predict(mesh: Mesh, cfg: BertConfig, rules=(), role: str = "student"):
  """Jitted logits for evaluation: params placed by the rules, batch sharded, the logits
  replicated (every process gets all of them, so metrics agree everywhere)."""
  graph = graphdef_of(cfg)

  def predict(params, batch):
    out = nnx.merge(graph, params)(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return out.logits

  params = sharding.param_shardings(mesh, abstract_params(cfg), rules, role=role)
  return jax.jit(predict, in_shardings=(params, NamedSharding(mesh, sharding.BATCH)),
                 out_shardings=NamedSharding(mesh, P()))


def init_state(config, params: dict, aux: dict, tx) -> TrainState:
  # A copy, so donating the train state can never free arrays it shares with the teacher
  # (a student built from teacher layers shares its embedding arrays).
  trainable = jax.tree.map(jnp.array, {"student": params, "aux": aux})
  return TrainState(jnp.zeros((), jnp.int32), trainable, tx.init(trainable))
