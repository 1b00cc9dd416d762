"""The train step, the optimizer and the jitted eval forward.

`train_step` is a module-level pure function; the loop binds its static arguments (the
method, the models' structure, the optimizer, the seed) with functools.partial and jits it
over a (data, fsdp) `Mesh` with explicit shardings (`jit_train_step`). The batch is sharded
over both axes, parameters and optimizer state are replicated or, with mesh.fsdp > 1,
sharded over `fsdp` by the config's rules, and XLA inserts the collectives. Only the
trainable tree ({"student": ..., "aux": ...}) is differentiated and optimised; the teacher
arrives as `TeacherInputs` (params, or its outputs cached once per stage), never donated.
"""

from __future__ import annotations

import functools
import re
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxdistill.core import rng
from jaxdistill.core.state import TeacherInputs, TrainState
from jaxdistill.methods.base import Method, Models, StepOutputs, graphdef_of
from jaxdistill.models import registry
from jaxdistill.train import sharding
from jaxdistill.train.sharding import make_mesh  # noqa: F401  (re-exported)


def train_step(state: TrainState, teacher: TeacherInputs, batch: dict, *, method: Method,
               models: Models, tx: optax.GradientTransformation, seed: int
               ) -> tuple[TrainState, dict]:
  """One optimizer (micro-)step: the method's forwards and loss, the update, the NaN guard."""
  key = rng.step_key(seed, state.step)  # the same key for the same step, always

  def loss_fn(trainable):
    b = method.prepare_batch(batch, key)  # e.g. MLM masking, before both forwards
    student = method.student_forward(models, trainable, teacher.params, b, key, state.step)
    teachers = method.teacher_forward(models, teacher, b)
    return method.loss(StepOutputs(student, teachers, b, trainable, teacher.params, state.step))

  (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.trainable)
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


def models_of(student_cfg, teacher_cfgs: tuple = ()) -> Models:
  return Models(graphdef_of(student_cfg), student_cfg,
                tuple(graphdef_of(c) for c in teacher_cfgs), tuple(teacher_cfgs))


def abstract_params(cfg) -> dict:
  """The model's parameter tree as ShapeDtypeStructs (nothing allocated)."""
  model = nnx.eval_shape(lambda: registry.model_class(cfg)(cfg, rngs=nnx.Rngs(0)))
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def teacher_shardings(mesh: Mesh, teacher_cfgs: tuple, rules, *, cached: bool) -> TeacherInputs:
  """Where the step's TeacherInputs live: params by the rules; cached outputs (every leaf
  [B, ...]) like the batch."""
  if cached:
    return TeacherInputs(None, NamedSharding(mesh, sharding.BATCH))
  if not teacher_cfgs:
    return TeacherInputs(None, None)
  return TeacherInputs(tuple(sharding.param_shardings(mesh, abstract_params(c), rules, role="teacher")
                             for c in teacher_cfgs), None)


def state_sharding(config, mesh: Mesh, method: Method, student_cfg, tx):
  aux = jax.eval_shape(lambda: method.init_params(config.seed))
  state = jax.eval_shape(lambda p, a: init_state(p, a, tx), abstract_params(student_cfg), aux)
  return sharding.state_shardings(mesh, state, sharding.rules_of(config))


def jit_train_step(config, mesh: Mesh, method: Method, models: Models, tx, *, cached: bool,
                   forked=None):
  """train_step with its static arguments bound, jitted with explicit shardings. `forked`
  (train.forks > 1: a train/forks.py ForkPlan) maps it over K stacked states instead."""
  rules = sharding.rules_of(config)
  s_sharding = state_sharding(config, mesh, method, models.student_cfg, tx)
  t_sharding = teacher_shardings(mesh, models.teacher_cfgs, rules, cached=cached)
  step = functools.partial(train_step, method=method, models=models, tx=tx, seed=config.seed)
  if forked is not None:  # train.forks: K students in one program, the fork axis replicated
    step, s_sharding = forked.vmapped(method, models, tx), forked.shardings(s_sharding)
  return jax.jit(step, in_shardings=(s_sharding, t_sharding, NamedSharding(mesh, sharding.BATCH)),
                 out_shardings=(s_sharding, NamedSharding(mesh, P())), donate_argnums=(0,))


# ---- The optimizer -------------------------------------------------------------------------
def _schedule(lr: float, total_steps: int, warmup_ratio: float):
  warmup = max(1, int(total_steps * warmup_ratio))
  return optax.join_schedules(
      [optax.linear_schedule(0.0, lr, warmup),
       optax.linear_schedule(lr, 0.0, max(1, total_steps - warmup))], [warmup])


def make_optimizer(config, total_steps: int, labels_fn) -> optax.GradientTransformation:
  """AdamW with warmup and linear decay, global-norm clipping, optional accumulation.

  labels_fn(trainable) -> "student" / "aux" / "frozen" per leaf (the method's
  `optimizer_labels`, then optim.train_only / optim.freeze). Method parameters (`aux`, e.g.
  projections or LAD gates) get their own learning rate. Biases and LayerNorm parameters
  (1-D) are not weight-decayed, as in BERT.
  """
  o = config.optim

  def adamw(lr):
    return optax.adamw(_schedule(lr, total_steps, o.warmup_ratio), b1=o.b1, b2=o.b2, eps=o.eps,
                       weight_decay=o.weight_decay, mask=lambda t: jax.tree.map(lambda x: x.ndim > 1, t))

  tx = optax.chain(
      optax.clip_by_global_norm(o.clip_norm) if o.clip_norm > 0 else optax.identity(),
      optax.multi_transform({"student": adamw(o.lr), "aux": adamw(o.aux_lr or o.lr),
                             "frozen": optax.set_to_zero()}, labels_fn))
  if o.grad_accum > 1:
    tx = optax.MultiSteps(tx, every_k_schedule=o.grad_accum)
  return tx


def optimizer_labels(config, method: Method):
  """The method's labels with optim.train_only / optim.freeze applied on top."""
  only = [re.compile(p) for p in config.optim.train_only]
  frozen = [re.compile(p) for p in config.optim.freeze]

  def labels_fn(tree: dict) -> dict:
    labels = method.optimizer_labels(tree)
    if not (only or frozen):
      return labels

    def label(path, current):  # e.g. MobileBERT's layer-wise stages, an MLM head fitted alone
      name = sharding.path_name(path)
      if (only and not any(p.search(name) for p in only)) or any(p.search(name) for p in frozen):
        return "frozen"
      return current

    return jax.tree_util.tree_map_with_path(label, labels)

  return labels_fn


def init_state(params: dict, aux: dict, tx) -> TrainState:
  # A copy, so donating the train state can never free arrays it shares with the teacher
  # (a student built from teacher layers shares its embedding arrays).
  trainable = jax.tree.map(jnp.array, {"student": params, "aux": aux})
  return TrainState(jnp.zeros((), jnp.int32), trainable, tx.init(trainable))


# ---- Evaluation ----------------------------------------------------------------------------
def make_predict(mesh: Mesh, cfg, rules=(), role: str = "student"):
  """Jitted logits for evaluation: params placed by the rules, batch sharded, the logits
  replicated (every process gets all of them, so metrics agree everywhere)."""
  graph = graphdef_of(cfg)

  def predict(params, batch):
    out = nnx.merge(graph, params)(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    return out.logits

  params = sharding.param_shardings(mesh, abstract_params(cfg), rules, role=role)
  return jax.jit(predict, in_shardings=(params, NamedSharding(mesh, sharding.BATCH)),
                 out_shardings=NamedSharding(mesh, P()))


def teacher_inputs(teacher_params: Optional[tuple], cache, local_batch: dict, layout
                   ) -> TeacherInputs:
  """This batch's TeacherInputs: the teachers' params, or the rows of the cached outputs
  (train/teacher_cache.py: TeacherCache) this process feeds, cut to the batch's length
  (padding rows, index -1, read row 0 and carry weight 0), as global [B, ...] arrays."""
  if cache is not None:
    outputs = cache.rows(local_batch["index"], local_batch["input_ids"].shape[1], layout.batch_size)
    leaves, treedef = jax.tree.flatten(outputs)  # `Unread` placeholders have no leaves
    placed = layout.put(dict(enumerate(leaves)))
    return TeacherInputs(None, jax.tree.unflatten(treedef, [placed[i] for i in range(len(leaves))]))
  return TeacherInputs(teacher_params, None)
