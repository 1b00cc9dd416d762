"""The train loop: one stage of a run (jaxdistill/pipeline.py expands a run into stages).

`train_stage(config, workdir)` builds the mesh, data, method, models and jitted step, then
trains, evaluates, checkpoints, exports and reports. It is resumable: run it again in the
same workdir and it continues from the last checkpoint, ending with the params an
uninterrupted run ends with. It never calls itself and sets no process-wide state (the CLI
does: compilation cache, malloc, logging).

The same code runs on one device, many, or many processes (jaxdistill/distributed.py): each
process feeds its rows of every batch, every process takes part in checkpoints and collectives,
and only process 0 writes metrics, reports and exports.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import time
from pathlib import Path

import jax
import numpy as np
from jax.sharding import NamedSharding

from jaxdistill import data as data_lib
from jaxdistill import distributed
from jaxdistill.data import buckets
from jaxdistill import methods
from jaxdistill.methods.base import RunInfo
from jaxdistill.models import count_params
from jaxdistill.models.hub import load_tokenizer, resolve_model_dir, save_pretrained
from jaxdistill.train import build, preempt, sharding, teacher_cache
from jaxdistill.train.checkpoint import Checkpoints
from jaxdistill.train.compression import compression_report
from jaxdistill.train.evaluate import evaluate, task_metric
from jaxdistill.train import forks  # train.forks: K students in one program
from jaxdistill.train.logs import MetricWriter, ProgressBar, wandb_settings
from jaxdistill.train.step import (init_state, jit_train_step, make_mesh, make_optimizer, make_predict,
                                   models_of, optimizer_labels, state_sharding, teacher_inputs,
                                   teacher_shardings)

log = logging.getLogger(__name__)
DONE = "DONE"  # marker written into export/ once a run has finished


def eval_splits(task) -> list[str]:
  """Every labelled split but train (MNLI: dev_matched and dev_mismatched); unlabelled test
  sets (GLUE's) are never scored."""
  return [name for name, split in task.splits.items() if name != "train" and split.has_labels]


def has_labelled_dev(task) -> bool:
  try:
    return task.splits["dev"].has_labels  # "dev" also finds MNLI's dev_matched
  except data_lib.SplitNotFound:
    return False


def cache_root() -> str:
  return os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "jaxdistill")


def load_teachers(config, method, task, sources: tuple, student, tok_source: str, tokenizer) -> list:
  """Each teacher checkpoint, built and checked against the student (ids, lengths, labels)."""
  teachers = [build.build_teacher(src, config, task, method) for src in sources]
  for src, teacher in zip(sources, teachers):
    build.check_pair(student.cfg, teacher.cfg)
    build.check_max_length(config.data.max_length, teacher.cfg, "teacher", src)
    build.check_tokenizers(tok_source, src, tokenizer)
  if teachers and tokenizer.vocab_size > student.cfg.vocab_size:
    raise ValueError("the tokenizer has more ids than the model's vocabulary; use the model's tokenizer")
  return teachers


def train_stage(config, workdir, *, earlier_stages: dict | None = None, stage_name: str = "") -> dict:
  """Runs one stage in `workdir`; returns its summary (metrics, params, report).

  `earlier_stages` ({stage name: train seconds}, "teacher" for the teacher's fine-tuning):
  the run's earlier train stages, so the report's training time covers the whole run."""
  if config.teacher.finetune or config.stages:
    raise ValueError("train_stage runs one stage: expand teacher.finetune and config.stages "
                     "with jaxdistill.pipeline.run (python -m jaxdistill.train does)")
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  main = distributed.is_main()
  if main:
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  t_start = time.time()
  method = methods.get(config)
  fork = forks.ForkRun(config, workdir) if forks.count(config) > 1 else None  # train.forks
  teacher_source = config.teacher.source
  sources = method.teacher_sources(teacher_source)
  if method.teacher_use() != "none" and not sources:
    raise ValueError("the configured method needs a teacher; set teacher.source (and "
                     "teacher.finetune=True to fine-tune it on the task first)")
  # A named teacher no loss reads is still loaded for the compression report (the step
  # never runs its forward then).
  if not sources and config.report.compression and teacher_source:
    sources = (teacher_source,)

  # ---- Mesh and data ----
  mesh = make_mesh(config)
  batch_sharding = NamedSharding(mesh, sharding.BATCH)
  tok_source = config.student.source or teacher_source
  tokenizer = load_tokenizer(tok_source)
  cache_dir = config.cache_dir or os.path.join(cache_root(), "data")
  task = data_lib.load_task(config.data, tokenizer, cache_dir=cache_dir)
  metric = task_metric(task)
  # Text without labels (e.g. DistilBERT's MLM stages): no dev split to evaluate or to pick
  # the best checkpoint by; the run trains, exports its last params and reports nothing.
  has_dev = has_labelled_dev(task)
  bs = config.train.batch_size
  steps_per_epoch = data_lib.num_batches(task.splits["train"], bs, train=True, drop_remainder=True)
  total_steps = steps_per_epoch * config.train.epochs
  if config.train.max_steps:
    total_steps = min(total_steps, config.train.max_steps)

  # ---- Models and method ----
  student = build.build_student(config, task, teacher_source, method)
  build.check_max_length(config.data.max_length, student.cfg, "student", tok_source)
  teachers = load_teachers(config, method, task, sources, student, tok_source, tokenizer)
  in_step = method.teacher_use() != "none"  # otherwise only the report reads the teacher
  step_teachers = teachers if in_step else []
  method.setup(RunInfo(student.cfg, tuple(t.cfg for t in step_teachers), total_steps))
  if fork is not None:  # train.forks: each fork's method and student (its seed or swept value)
    fork.setup(method.run, task, teacher_source, student)
  models = models_of(student.cfg, tuple(t.cfg for t in step_teachers))

  # ---- Step ----
  tx = make_optimizer(config, total_steps, optimizer_labels(config, method))
  rules = sharding.rules_of(config)
  placed = teacher_shardings(mesh, tuple(t.cfg for t in teachers), rules, cached=False).params or ()
  teachers = [t._replace(params=sharding.put(t.params, sh)) for t, sh in zip(teachers, placed)]
  teacher_params = tuple(t.params for t in teachers[:len(step_teachers)]) or None
  # The teacher outputs the losses read, computed once over the train split when the teacher's
  # inputs are fixed (train/teacher_cache.py); None: the teacher runs in the step.
  cache = teacher_cache.build(config, workdir, method, models, teacher_params, task, mesh,
                              batch_sharding, student.params)
  cached = cache is not None
  if cached:
    teacher_params = None
  train_step = jit_train_step(config, mesh, method, models, tx, cached=cached)
  predict = make_predict(mesh, student.cfg, rules)
  state = sharding.put(init_state(student.params, method.init_params(config.seed), tx),
                       state_sharding(config, mesh, method, student.cfg, tx))
  if fork is not None:  # train.forks: K stacked states, one vmapped step (train/forks.py)
    train_step, state = fork.take_over(config, mesh, method, models, tx, cached=cached)

  # ---- Checkpoints: resume if this workdir has one ----
  ckpt = Checkpoints(workdir, keep=config.train.keep, primary_metric=metric)
  restored = ckpt.restore_latest(state)  # the newest verified one, into the template's shardings
  if restored is not None:
    state = restored
    log.info("resumed from step %d in %s", int(state.step), workdir)

  # ---- Train ----
  writer = MetricWriter(workdir, active=main, wandb=wandb_settings(config))
  layout = sharding.BatchLayout(batch_sharding, bs)  # this process's rows of each batch
  feed = functools.partial(teacher_inputs, teacher_params, cache, layout=layout)
  if fork is not None:
    fork.open(metric)
  state, step = train_loop(config, workdir, state, train_step, feed, task, layout, ckpt, writer,
                           predict, method, batch_sharding, steps_per_epoch, total_steps, has_dev,
                           fork=fork)
  if step < total_steps:  # stopped early (train.stop_after): resumable, nothing final yet
    ckpt.close()
    writer.close()
    if fork is not None:
      fork.close()
    return {"name": config.name, "state": state, "stopped_at": step}

  # ---- Final evaluation, export, report ----
  teacher_cache.release(workdir)  # trained to the end: the cached teacher outputs are done with
  finish = functools.partial(finish_run, task=task, predict=predict, batch_sharding=batch_sharding,
                             student_cfg=student.cfg, tok_source=tok_source, teachers=teachers,
                             mesh=mesh, total_steps=total_steps, t_start=t_start, state=state,
                             earlier_stages=earlier_stages, stage_name=stage_name)
  if fork is not None:  # train.forks: each fork finishes as its own run, in <workdir>/fork<i>
    ckpt.close()
    writer.close()
    return fork.finish(state, finish)
  params = state.trainable["student"]
  if config.train.select_best:
    params = ckpt.best_params(params) or params
  ckpt.close()
  return finish(config, workdir, params, writer)


def finish_run(config, workdir: Path, params, writer, *, task, predict, batch_sharding, student_cfg,
               tok_source, teachers, mesh, total_steps, t_start, state, earlier_stages,
               stage_name) -> dict:
  """The final evaluation, export and compression report of one trained student: the run's,
  or one fork's in its own workdir (train/forks.py). Returns the summary."""
  main, metric = distributed.is_main(), task_metric(task)
  results = {split: evaluate(predict, params, task, split, config, batch_sharding,
                            predictions_path=workdir / f"predictions_{split}.json" if main else None)
             for split in eval_splits(task)}
  writer.write(total_steps, {f"final/{s}/{k}": v for s, m in results.items() for k, v in m.items()})
  writer.close()
  if main:
    print(f"{config.name}: " + ("  ".join(f"{s} {metric} {m[metric]:.4f}" for s, m in results.items())
                                 or "no labelled split to evaluate"))
  summary = {"name": config.name, "method": config.report.label or config.method, "task": task.name, "metric": metric,
             "student": results, "student_params": count_params(params),
             "train_seconds": time.time() - t_start, "state": state}
  if config.report.export:
    host_params = sharding.to_host(params)  # a collective: every process gathers
    if main:
      out = save_pretrained(student_cfg, host_params, workdir / "export",
                            tokenizer_dir=resolve_model_dir(tok_source))
      (out / DONE).write_text(json.dumps({k: v for k, v in summary.items() if k != "state"}))
    distributed.sync(f"export {workdir}")  # a next stage on any host reads it
  if teachers and config.report.compression and results:
    stages = {**(earlier_stages or {}), stage_name or config.name: summary["train_seconds"]}
    run_seconds = sum(v for k, v in stages.items() if k != "teacher")
    summary["report"] = compression_report(config, task, mesh, batch_sharding, teachers[0], predict,
                                           params, results, workdir, run_seconds, stages)
  return summary


def train_loop(config, workdir: Path, state, train_step, feed, task, layout, ckpt, writer, predict,
               method, batch_sharding, steps_per_epoch: int, total_steps: int, has_dev: bool,
               fork=None):
  """Steps from the state's step to total_steps (or train.stop_after): logs, checkpoints,
  dev evaluations (each followed by the method's on_evaluate) and preemption. Returns
  (state, step). With `fork` (train.forks), the metrics and dev evaluations are each fork's."""
  main, bs = distributed.is_main(), config.train.batch_size
  start = int(state.step)
  eval_every = config.train.eval_every or steps_per_epoch
  train_split = task.splits["train"]  # train.buckets: lengths chosen from its histogram
  bucket = buckets.parse(config.train.buckets, train_split.lengths, bs, train_split.max_length,
                         seed=forks.data_seed(config)) or config.train.bucket_multiple
  bar = ProgressBar(config.name, total_steps, start, active=main)
  step, pending, t_last, n_last = start, [], time.time(), start
  # NaN/Inf steps are skipped in the step; their flags are read only at log and save points,
  # and with train.nonfinite=stop nothing after a bad step is saved (train/preempt.py).
  nonfinite = preempt.NonFiniteMonitor(config.train.nonfinite, workdir / "ckpt")
  guard = preempt.PreemptionGuard().__enter__()  # SIGTERM: checkpoint, then exit 143
  try:
    for epoch in range(start // steps_per_epoch, config.train.epochs):
      first = start - epoch * steps_per_epoch if epoch == start // steps_per_epoch else 0
      # The order's seed is train.data_seed (default config.seed): forks share one order.
      for batch in layout.batches(task.splits["train"], train=True, seed=forks.data_seed(config),
                                  epoch=epoch, start_batch=first, drop_remainder=True,
                                  bucket_multiple=bucket):
        if step >= total_steps or step == (config.train.stop_after or -1):
          break
        state, metrics = train_step(state, feed(batch), layout.put(batch))
        step += 1
        pending.append(metrics)
        nonfinite.add(step, metrics["nonfinite"] if fork is None else fork.any_nonfinite(metrics))
        if step % config.train.log_every == 0 or step == total_steps:
          now = time.time()
          rate = (step - n_last) * bs / max(now - t_last, 1e-9)
          if fork is None:
            logged = {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[0]}
            logged["nonfinite"] *= len(pending)  # a count of skipped steps, not a mean
            logged["examples_per_s"] = rate
            writer.write(step, {f"train/{k}": v for k, v in logged.items()})
          else:  # train.forks: [K] metrics, each fork's into its own metrics.jsonl
            logged = fork.write_train(step, pending, rate)
          t_last, n_last, pending = now, step, []
          bar.update(step, f"loss {logged['loss']:.4f}  {rate:.1f} ex/s")
          nonfinite.check(ckpt.latest_step())
        else:
          bar.update(step, bar.progress.tasks[0].fields["info"])
        if step % config.train.checkpoint_every == 0:
          nonfinite.check(ckpt.latest_step())
          ckpt.save(state)
        if has_dev and (step % eval_every == 0 or step == total_steps):
          nonfinite.check(ckpt.latest_step())
          if fork is None:
            dev = evaluate(predict, state.trainable["student"], task, "dev", config, batch_sharding)
            writer.write(step, {f"dev/{k}": v for k, v in dev.items()})
            ckpt.save_best(step, state.trainable["student"], dev)
          else:  # train.forks: each fork's dev metrics, into its own best checkpoint
            fork.evaluate_dev(step, state, predict, task, batch_sharding)
          ckpt.save(state, force=True)
          if fork is None:
            method.on_evaluate(step, state.trainable["student"], dev)
          else:
            fork.on_evaluate(step)
        if guard.should_stop(step):
          nonfinite.check(ckpt.latest_step())
          ckpt.save(state, force=True)
          raise preempt.preempted(step, workdir)
    nonfinite.check(ckpt.latest_step())
    ckpt.save(state, force=True)
    if guard.received and step == total_steps:  # SIGTERM after the last step's check
      raise preempt.preempted(step, workdir)
  except (preempt.Preempted, preempt.NonFiniteError):
    ckpt.close()  # waits until the last checkpoint is on disk
    writer.close()
    if fork is not None:
      fork.close()
    raise
  finally:
    guard.__exit__(None, None, None)
    bar.close()
  return state, step
