"""`train.forks=K`: K students trained in one jitted program, each written out as its own run.

    python -m jaxdistill.train --config configs/kd.py --workdir runs/kd3 --config.train.forks=3
    python -m jaxdistill.train --config configs/kd.py --workdir runs/kdT \
        --config.train.fork_values=kd.temperature=1,2,4

Fork i equals a separate run with seed=seed+i and train.data_seed=seed (the same teacher), to
fp32 noise. Shared: the batches (train.data_seed's order), one teacher forward or cached-output
lookup per batch, the step counter, the checkpoints. Per fork: what a seed decides, i.e. the
student's fresh parameters, the method's `init_params`, and every key drawn in the step, since
the seed is a traced per-fork value inside `jax.vmap`. A sweep (`train.fork_values`) gives fork
i the value v_i and every fork config.seed: `optim.lr` scales each fork's updates by
v_i / optim.lr (AdamW's update is linear in the rate), and a loss hyperparameter is any number
the method's loss terms hold, found by comparing the K forks' methods; those numbers are traced
per fork. The stacked state checkpoints to <workdir>/ckpt; fork i writes its own run's files
into <workdir>/fork<i>/, and <workdir>/forks.json sums them up (docs/architecture.md, "Forks").
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import logging
from pathlib import Path
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxdistill import config_lib, distributed, methods
from jaxdistill.core.errors import ConfigError
from jaxdistill.core.state import TrainState
from jaxdistill.train import build, sharding
from jaxdistill.train.checkpoint import Checkpoints
from jaxdistill.train.evaluate import evaluate
from jaxdistill.train.logs import MetricWriter, wandb_settings
from jaxdistill.train.step import (init_state, jit_train_step, optimizer_labels, state_sharding,
                                   train_step)

log = logging.getLogger(__name__)
SUMMARY = "forks.json"
LR_KEY = "optim.lr"


# ---- The config: how many forks, and each one's config ------------------------------------
class Sweep(NamedTuple):
  key: str                 # dotted config key, e.g. "kd.temperature"
  texts: tuple[str, ...]   # one value per fork, as written on the command line


def data_seed(config) -> int:
  """The seed of the train batches' order: train.data_seed, or config.seed when it is -1."""
  s = config.train.get("data_seed", -1)
  return config.seed if s == -1 else s


def sweep_of(config) -> Optional[Sweep]:
  text = str(config.train.get("fork_values", "") or "").strip()
  if not text:
    return None
  key, eq, values = text.partition("=")
  texts = tuple(v.strip() for v in values.split(",") if v.strip())
  if not eq or not key.strip() or len(texts) < 2:
    raise ConfigError(f"train.fork_values={text!r}: write KEY=v1,v2,... with at least two values, "
                      "e.g. kd.temperature=1,2,4 or optim.lr=1e-4,5e-5")
  if len(set(texts)) != len(texts):
    raise ConfigError(f"train.fork_values={text!r} repeats a value; give each fork its own "
                      "(train.forks=K trains K seeds of one value)")
  return Sweep(key.strip(), texts)


def count(config) -> int:
  """K, the number of students this config trains (1: a plain run); checks the fork keys."""
  forks = config.train.get("forks", 1)
  if isinstance(forks, bool) or not isinstance(forks, int) or forks < 1:
    raise ConfigError(f"train.forks={forks!r} must be an integer >= 1 (1 = one student)")
  seed = config.train.get("data_seed", -1)
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < -1:
    raise ConfigError(f"train.data_seed={seed!r} must be an integer >= 0 (or -1: config.seed)")
  sweep = sweep_of(config)
  if sweep is None:
    return forks
  if forks not in (1, len(sweep.texts)):
    raise ConfigError(f"train.forks={forks} but train.fork_values gives {len(sweep.texts)} values; "
                      "drop train.forks (the sweep sets it) or give as many values as forks")
  return len(sweep.texts)


def fork_config(config, i: int):
  """Fork i's config: the separate run it equals (seed + i, or the sweep's i-th value; the
  shared batch order as train.data_seed)."""
  sweep = sweep_of(config)
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.name = f"{config.name}_fork{i}"
    c.train.forks, c.train.fork_values, c.train.data_seed = 1, "", data_seed(config)
  if sweep is None:
    c.seed = config.seed + i
    return c
  if sweep.key in ("seed", "train.forks", "train.fork_values", "train.data_seed"):
    raise ConfigError(f"train.fork_values cannot sweep {sweep.key}; train.forks=K trains seeds "
                      "seed..seed+K-1")
  try:
    config_lib.apply_override(c, sweep.key, sweep.texts[i])
  except ConfigError as e:
    raise ConfigError(f"train.fork_values: {e}") from None
  return c


def check_single_stage(config, stages: list) -> None:
  """Forks run one train stage: a later stage would have to start fork i from fork i's
  export, which the pipeline does not do yet."""
  if count(config) > 1 and len(stages) > 1:
    names = ", ".join(s.name for s in stages)
    raise ConfigError(f"train.forks > 1 runs single-stage configs only for now, and this run has "
                      f"stages {names}; run it with train.forks=1 (or one stage at a time)")


# ---- Sweeping a loss hyperparameter: the numbers in the terms that differ per fork --------
def _differing(objs: list, path: tuple = ()) -> list[tuple[tuple, np.ndarray]]:
  """(path, [K] values) of every number that differs between the K objects (terms dicts,
  (weight schedule, term) pairs, frozen dataclasses); ConfigError for any other difference."""
  first = objs[0]
  if all(o == first for o in objs[1:]):
    return []
  if isinstance(first, dict) and all(isinstance(o, dict) and o.keys() == first.keys() for o in objs):
    return [d for k in first for d in _differing([o[k] for o in objs], path + (k,))]
  if isinstance(first, tuple) and all(isinstance(o, tuple) and len(o) == len(first) for o in objs):
    return [d for j in range(len(first)) for d in _differing([o[j] for o in objs], path + (j,))]
  if dataclasses.is_dataclass(first) and all(type(o) is type(first) for o in objs):
    return [d for f in dataclasses.fields(first)
            for d in _differing([getattr(o, f.name) for o in objs], path + (f.name,))]
  if all(isinstance(o, (int, float)) and not isinstance(o, bool) for o in objs):
    return [(path, np.asarray(objs, np.float32))]
  where = "/".join(str(p) for p in path) or "the loss terms"
  raise ConfigError(f"train.fork_values changes {where} in a way the step cannot trace per fork "
                    f"({first!r} vs others; a term switched off, a string or a flag); sweep a "
                    "number: optim.lr, a nonzero losses.<term> weight or a term setting")


def _replaced(obj, path: tuple, value):
  """`obj` with the number at `path` replaced by `value` (a tracer); no __init__ re-run."""
  if not path:
    return value
  head, rest = path[0], path[1:]
  if isinstance(obj, dict):
    return {**obj, head: _replaced(obj[head], rest, value)}
  if isinstance(obj, tuple):
    return obj[:head] + (_replaced(obj[head], rest, value),) + obj[head + 1:]
  new = copy.copy(obj)
  object.__setattr__(new, head, _replaced(getattr(obj, head), rest, value))
  return new


def with_terms(method, paths: tuple, values) -> "methods.base.Method":
  """A shallow copy of `method` whose loss terms read `values` at `paths` (inside the step)."""
  if not paths:
    return method
  terms = method.terms
  for path, value in zip(paths, values):
    terms = _replaced(terms, path, value)
  m = copy.copy(method)
  m.terms = terms
  return m


def scaled_lr(tx, labels_fn, scale, aux_too: bool):
  """`tx` with its updates times `scale` for "student" params (and "aux" ones when they
  follow optim.lr): the run with learning rate `scale * optim.lr`."""
  def update(grads, state, params=None):
    updates, state = tx.update(grads, state, params)
    labels = labels_fn(updates)
    return jax.tree.map(lambda lab, u: u * scale.astype(u.dtype)
                        if lab == "student" or (lab == "aux" and aux_too) else u,
                        labels, updates), state
  return optax.GradientTransformation(tx.init, update)


# ---- The vmapped step -------------------------------------------------------------------
class ForkInputs(NamedTuple):
  """What differs per fork inside the step: [K] arrays, traced under vmap."""
  seeds: np.ndarray            # int32 [K]
  lr_scale: Optional[np.ndarray]  # float32 [K] (optim.lr sweeps) or None
  paths: tuple                 # term paths swept
  values: tuple                # float32 [K] per path


def forked_train_step(state: TrainState, teacher, batch: dict, *, method, models, tx,
                      inputs: ForkInputs, labels_fn, aux_too: bool):
  """`train_step` over K stacked states in one program: the batch and the teacher inputs are
  shared (broadcast), the seed and any swept value are per fork."""
  def one(trainable, opt_state, seed, lr_scale, values):
    m = with_terms(method, inputs.paths, values)
    t = tx if lr_scale is None else scaled_lr(tx, labels_fn, lr_scale, aux_too)
    new, metrics = train_step(TrainState(state.step, trainable, opt_state), teacher, batch,
                              method=m, models=models, tx=t, seed=seed)
    return new.trainable, new.opt_state, metrics

  trainable, opt_state, metrics = jax.vmap(one)(
      state.trainable, state.opt_state, jnp.asarray(inputs.seeds),
      None if inputs.lr_scale is None else jnp.asarray(inputs.lr_scale),
      tuple(jnp.asarray(v) for v in inputs.values))
  return TrainState(state.step + 1, trainable, opt_state), metrics


def stacked_shardings(single: TrainState) -> TrainState:
  """One run's state shardings with a leading, replicated fork axis (the step stays scalar)."""
  def add(s):
    return NamedSharding(s.mesh, P(None, *s.spec))
  return TrainState(single.step, jax.tree.map(add, single.trainable),
                    jax.tree.map(add, single.opt_state))


def stack(trees: list):
  return jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *trees)


class ForkPlan:
  """The K forks of one stage: their configs, methods, initial params and step inputs."""

  def __init__(self, config):
    self.config, self.k, self.sweep = config, count(config), sweep_of(config)
    self.configs = [fork_config(config, i) for i in range(self.k)]
    self.seeds = [c.seed for c in self.configs]
    self.methods: list = []

  def setup(self, run, task, teacher_source: Optional[str], student) -> None:
    """Builds the K methods (each set up with the run's models) and students. `student`, the
    run's own build, is fork 0's (same seed); forks 1.. are built with their seeds."""
    self.setup_methods(run)
    self.students = [student.params] + [build.build_student(c, task, teacher_source, m).params
                                        for c, m in zip(self.configs[1:], self.methods[1:])]

  def setup_methods(self, run) -> None:
    """The K methods, and what the step reads per fork (seeds, swept values)."""
    self.methods = [methods.get(c) for c in self.configs]
    for m in self.methods:
      m.setup(run)
    paths, values = (), ()
    if self.sweep is not None and self.sweep.key != LR_KEY:
      found = _differing([getattr(m, "terms", None) for m in self.methods])
      if not found:
        raise ConfigError(f"train.fork_values sweeps {self.sweep.key}, which no loss term of "
                          f"method={self.config.method} reads; sweep optim.lr or a loss "
                          "hyperparameter (losses.<term>, kd.temperature, ...)")
      paths, values = tuple(p for p, _ in found), tuple(v for _, v in found)
    lr_scale = None
    if self.sweep is not None and self.sweep.key == LR_KEY:
      if not self.config.optim.lr > 0 or not all(c.optim.lr > 0 for c in self.configs):
        raise ConfigError("train.fork_values=optim.lr=...: every learning rate, and optim.lr, "
                          "must be > 0")
      lr_scale = np.asarray([c.optim.lr / self.config.optim.lr for c in self.configs], np.float32)
    self.inputs = ForkInputs(np.asarray(self.seeds, np.int32), lr_scale, paths, values)

  # -- what jit_train_step calls (train/step.py: `forked=`) --
  def vmapped(self, method, models, tx):
    # Fork 0's method is the template: its terms hold fork 0's values where forks agree.
    template = self.methods[0]
    return functools.partial(forked_train_step, method=template, models=models, tx=tx,
                             inputs=self.inputs, labels_fn=optimizer_labels(self.config, template),
                             aux_too=not self.config.optim.aux_lr)

  def shardings(self, single: TrainState) -> TrainState:
    return stacked_shardings(single)

  # -- the loop's entry points --
  def take_over(self, config, mesh, method, models, tx, *, cached: bool):
    """(the jitted forked step, the stacked initial state, placed): in place of one run's."""
    step = jit_train_step(config, mesh, method, models, tx, cached=cached, forked=self)
    single = state_sharding(config, mesh, method, models.student_cfg, tx)
    states = [init_state(p, m.init_params(seed), tx)
              for p, m, seed in zip(self.students, self.methods, self.seeds)]
    stacked = TrainState(np.asarray(states[0].step), stack([s.trainable for s in states]),
                         stack([s.opt_state for s in states]))
    del states, self.students  # the stacked copy is all that is kept
    self._param_shardings = single.trainable["student"]
    self._take = jax.jit(lambda tree, i: jax.tree.map(lambda x: x[i], tree),
                         out_shardings=self._param_shardings)
    return step, sharding.put(stacked, self.shardings(single))

  def params(self, state: TrainState, i: int) -> dict:
    """Fork i's student params, placed as one run's (what `predict` and the exports read)."""
    return self._take(state.trainable["student"], np.int32(i))


class ForkBest(Checkpoints):
  """Only the best-by-dev half of Checkpoints, in <workdir>/fork<i>/best: every fork's
  resumable state is the stacked one in <workdir>/ckpt. The options are Checkpoints'."""

  def __init__(self, workdir: Path, *, primary_metric: str):  # no resume manager
    self.workdir = Path(workdir).absolute()
    self.best = ocp.CheckpointManager(
        self.workdir / "best",
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1, best_fn=lambda m: m[primary_metric], best_mode="max",
            enable_async_checkpointing=False, cleanup_tmp_directories=True))

  def close(self) -> None:
    self.best.close()


# ---- The run's outputs: one directory per fork --------------------------------------------
class ForkRun(ForkPlan):
  """ForkPlan plus what each fork writes: <workdir>/fork<i>/ as a separate run's workdir."""

  def __init__(self, config, workdir):
    super().__init__(config)
    self.workdir = Path(workdir)
    self.dirs = [self.workdir / f"fork{i}" for i in range(self.k)]
    self.main = distributed.is_main()
    for c, d in zip(self.configs, self.dirs):
      d.mkdir(parents=True, exist_ok=True)
      if self.main:
        (d / "config.json").write_text(c.to_json_best_effort(indent=2))
    self.writers: list = []
    self.best: list = []
    self._evaluated: list = []

  def open(self, metric: str) -> None:
    """Each fork's metric writer and best-checkpoint manager (resumed runs append)."""
    self.writers = [MetricWriter(d, active=self.main, wandb=wandb_settings(c))
                    for c, d in zip(self.configs, self.dirs)]
    self.best = [ForkBest(d, primary_metric=metric) for d in self.dirs]

  def close(self) -> None:
    for w in self.writers:
      w.close()
    for b in self.best:
      b.close()

  def any_nonfinite(self, metrics: dict):
    return jnp.max(metrics["nonfinite"])  # a step is flagged if any fork skipped its update

  def write_train(self, step: int, pending: list, rate: float) -> dict:
    """Each fork's mean train metrics since the last log, into its own metrics.jsonl (as
    the loop logs one run); returns the forks' mean loss for the progress bar."""
    host = jax.device_get(pending)
    losses = []
    for i, w in enumerate(self.writers):
      logged = {k: float(np.mean([float(m[k][i]) for m in host])) for k in host[0]}
      logged["nonfinite"] *= len(host)  # a count of skipped steps, not a mean
      logged["examples_per_s"] = rate    # each student sees every example of the batch
      w.write(step, {f"train/{k}": v for k, v in logged.items()})
      losses.append(logged["loss"])
    return {"loss": float(np.mean(losses))}

  def evaluate_dev(self, step: int, state: TrainState, predict, task, batch_sharding) -> None:
    """Each fork's dev metrics, logged and offered to its own best checkpoint."""
    self._evaluated = []
    for i in range(self.k):
      params = self.params(state, i)
      dev = evaluate(predict, params, task, "dev", self.configs[i], batch_sharding)
      self.writers[i].write(step, {f"dev/{k}": v for k, v in dev.items()})
      self.best[i].save_best(step, params, dev)
      self._evaluated.append((params, dev))

  def on_evaluate(self, step: int) -> None:
    for m, (params, dev) in zip(self.methods, self._evaluated):
      m.on_evaluate(step, params, dev)
    self._evaluated = []

  def finish(self, state: TrainState, finish_one) -> dict:
    """Each fork's final params (its own best by dev, with train.select_best), then
    `finish_one(config, workdir, params, writer)` (the loop's final evaluation, export and
    report of one run); writes forks.json and returns the stage's summary."""
    summaries = []
    for i in range(self.k):
      params = self.params(state, i)
      if self.config.train.select_best:
        params = self.best[i].best_params(params) or params
      self.best[i].close()
      s = finish_one(self.configs[i], self.dirs[i], params, self.writers[i])
      summaries.append({k: v for k, v in s.items() if k != "state"})
    self.best = []
    self.writers = []  # finish_one closed them
    record = {"forks": self.k, "seeds": self.seeds, "data_seed": data_seed(self.config),
              "sweep": {"key": self.sweep.key, "values": list(self.sweep.texts)} if self.sweep else None,
              "metric": summaries[0].get("metric"),
              "per_fork": [{"fork": i, "workdir": d.name, "seed": c.seed,
                            **({"value": self.sweep.texts[i]} if self.sweep else {}),
                            "student": s.get("student", {})}
                           for i, (c, d, s) in enumerate(zip(self.configs, self.dirs, summaries))]}
    if self.main:
      (self.workdir / SUMMARY).write_text(json.dumps(record, indent=2))
    first = summaries[0]
    return {"name": self.config.name, "method": first.get("method"), "task": first.get("task"),
            "metric": first.get("metric"), "forks": summaries, "state": state,
            "train_seconds": first.get("train_seconds")}
