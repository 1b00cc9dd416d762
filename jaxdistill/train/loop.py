"""The train loop every method runs through: mesh, data, models, step, checkpoints, report.

`train_and_evaluate(config, workdir)` is resumable: run the same command in the same workdir
and it continues from the last checkpoint, ending with the params an uninterrupted run ends
with. A config with `teacher.finetune=True` first fine-tunes the teacher in its own workdir
(stage 1, itself resumable and skipped once done), then distils (stage 2).

The same code runs on one device, many, or many processes (jaxdistill/distributed.py): each
process feeds its rows of every batch, every process takes part in checkpoints and collectives,
and only process 0 writes metrics, reports and exports.
"""

from __future__ import annotations

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
from jaxdistill.methods import theseus
from jaxdistill.models import count_params
from jaxdistill.models.hub import load_tokenizer, resolve_model_dir, save_pretrained
from jaxdistill.train import build, preempt, sharding, terms
from jaxdistill.train.checkpoint import Checkpoints
from jaxdistill.train.evaluate import evaluate, predict_split, task_metric
from jaxdistill.train.logs import MetricWriter, ProgressBar
from jaxdistill.train.step import (init_state, make_mesh, make_optimizer, make_predict, make_train_step,
                                   train_shardings)

log = logging.getLogger(__name__)
DONE = "DONE"  # marker written into export/ once a run has finished


def finetune_config(config):
  """The stage-1 config that fine-tunes `teacher.source` on the task with the labels alone."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.name, c.method = f"{config.name}_teacher", "finetune"
    c.student.source, c.student.init, c.student.layers = config.teacher.source, "pretrained", ()
    c.teacher.source, c.teacher.finetune = "", False
    c.theseus.enabled = False
    for k in c.losses:
      c.losses[k] = 0.0
    c.losses.hard_ce = 1.0
    c.train.epochs, c.optim.lr = config.teacher.epochs, config.teacher.lr
    # A multi-stage method's first train stage fine-tunes the teacher with its own config:
    # none of that stage's restrictions (frozen params, a step cap, augmented data, an MLM
    # head, a non-BERT student) may leak into the teacher.
    c.optim.train_only, c.optim.freeze, c.train.max_steps = (), (), 0
    c.data.train_override, c.student.mlm_head, c.student.arch = "", False, "bert"
  return c


def teacher_stage(config, workdir: Path) -> str:
  """The teacher checkpoint directory: given, or fine-tuned here first (stage 1)."""
  if not config.teacher.finetune:
    return config.teacher.source
  if not config.teacher.source:
    raise ValueError("teacher.finetune=True needs teacher.source (the checkpoint to fine-tune)")
  tdir = Path(config.teacher.workdir or workdir / "teacher")
  if not (tdir / "export" / DONE).exists():
    log.info("stage 1: fine-tuning the teacher %s in %s", config.teacher.source, tdir)
    train_and_evaluate(finetune_config(config), tdir)
  return str(tdir / "export")


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


def enable_compilation_cache() -> None:
  """Keeps compiled XLA programs on disk: a resumed run, the next stage or the next method
  with the same shapes skips compilation (tens of seconds on a CPU)."""
  if not jax.config.jax_compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", os.path.join(cache_root(), "xla"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def train_and_evaluate(config, workdir) -> dict:
  enable_compilation_cache()
  if config.stages:  # a multi-stage method: each stage is a run like this one
    from jaxdistill.train.stages import run_stages
    return run_stages(config, workdir, train_and_evaluate)
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  main = distributed.is_main()
  if main:
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  t_start = time.time()

  # ---- Teacher (stage 1 when it must be fine-tuned first) ----
  teacher_source = teacher_stage(config, workdir)
  # BERT-of-Theseus with successor fine-tuning: module replacing runs first in
  # workdir/replacing (stage 2) and this run fine-tunes its export (stage 3).
  config = theseus.replacing_stage(config, workdir, teacher_source, train_and_evaluate)
  if terms.needs_teacher(config) and not teacher_source:
    raise ValueError("the configured losses need a teacher; set teacher.source (and "
                     "teacher.finetune=True to fine-tune it on the task first)")
  # A named teacher no loss reads is still loaded for the compression report (the step
  # never runs its forward then).
  keep = terms.needs_teacher(config) or (config.report.compression and config.teacher.source)
  teacher_source = teacher_source if keep else ""

  # ---- Mesh ----
  mesh = make_mesh(config)
  batch_sharding = NamedSharding(mesh, sharding.BATCH)

  # ---- Data ----
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

  # ---- Models ----
  teacher = build.build_teacher(teacher_source, config, task) if teacher_source else None
  student = build.build_student(config, task, teacher_source)
  build.check_max_length(config.data.max_length, student.cfg, "student", tok_source)
  if teacher is not None:
    build.check_pair(student.cfg, teacher.cfg)
    build.check_max_length(config.data.max_length, teacher.cfg, "teacher", teacher_source)
    build.check_tokenizers(tok_source, teacher_source, tokenizer)
    if tokenizer.vocab_size > student.cfg.vocab_size:
      raise ValueError("the tokenizer has more ids than the model's vocabulary; use the model's tokenizer")
  aux = terms.init_aux(jax.random.key(config.seed + 1), config, student.cfg,
                       teacher.cfg if teacher else None)

  # ---- Step ----
  tx = make_optimizer(config, total_steps)
  t_cfg, rules = teacher.cfg if teacher else None, sharding.rules_of(config)
  train_step = make_train_step(config, mesh, student.cfg, t_cfg, tx)
  predict = make_predict(mesh, student.cfg, rules)
  state_sharding, teacher_sharding = train_shardings(config, mesh, student.cfg, t_cfg, tx)
  state = sharding.put(init_state(config, student.params, aux, tx), state_sharding)
  if teacher is not None:  # placed once, as the step and the predictions expect it
    teacher = teacher._replace(params=sharding.put(teacher.params, teacher_sharding))
  teacher_params = teacher.params if teacher else None
  cached_logits = None
  if teacher is not None and config.train.cache_teacher_logits and terms.teacher_logits_suffice(config):
    log.info("caching the teacher's logits over the %d train examples", len(task.splits["train"]))
    cached_logits = predict_split(make_predict(mesh, teacher.cfg, rules, role="teacher"),
                                  teacher_params, task, "train", config, batch_sharding)[0]

  # ---- Checkpoints: resume if this workdir has one ----
  ckpt = Checkpoints(workdir, keep=config.train.keep, primary_metric=metric)
  restored = ckpt.restore_latest(state)  # the newest verified one, into the template's shardings
  if restored is not None:
    state = restored
    log.info("resumed from step %d in %s", int(state.step), workdir)
  start = int(state.step)

  # ---- Train ----
  writer = MetricWriter(workdir, active=main)
  eval_every = config.train.eval_every or steps_per_epoch
  bar = ProgressBar(config.name, total_steps, start, active=main)
  layout = sharding.BatchLayout(batch_sharding, bs)  # this process's rows of each batch
  step, pending, t_last, n_last = start, [], time.time(), start
  # NaN/Inf steps are skipped in the step; their flags are read only at log and save points,
  # and with train.nonfinite=stop nothing after a bad step is saved (train/preempt.py).
  nonfinite = preempt.NonFiniteMonitor(config.train.nonfinite, workdir / "ckpt")
  guard = preempt.PreemptionGuard().__enter__()  # SIGTERM: checkpoint, then exit 143
  try:
    for epoch in range(start // steps_per_epoch, config.train.epochs):
      first = start - epoch * steps_per_epoch if epoch == start // steps_per_epoch else 0
      for batch in layout.batches(task.splits["train"], train=True, seed=config.seed, epoch=epoch,
                                  start_batch=first, drop_remainder=True,
                                  bucket_multiple=config.train.bucket_multiple):
        if step >= total_steps or step == (config.train.stop_after or -1):
          break
        if cached_logits is not None:  # padding rows (index -1) carry weight 0
          batch["teacher_logits"] = cached_logits[np.maximum(batch["index"], 0)]
        state, metrics = train_step(state, teacher_params, layout.put(batch))
        step += 1
        pending.append(metrics)
        nonfinite.add(step, metrics["nonfinite"])
        if step % config.train.log_every == 0 or step == total_steps:
          logged = {k: float(np.mean([float(m[k]) for m in pending])) for k in pending[0]}
          logged["nonfinite"] *= len(pending)  # a count of skipped steps, not a mean
          now = time.time()
          logged["examples_per_s"] = (step - n_last) * bs / max(now - t_last, 1e-9)
          t_last, n_last, pending = now, step, []
          writer.write(step, {f"train/{k}": v for k, v in logged.items()})
          bar.update(step, f"loss {logged['loss']:.4f}  {logged['examples_per_s']:.1f} ex/s")
          nonfinite.check(ckpt.latest_step())
        else:
          bar.update(step, bar.progress.tasks[0].fields["info"])
        if step % config.train.checkpoint_every == 0:
          nonfinite.check(ckpt.latest_step())
          ckpt.save(state)
        if has_dev and (step % eval_every == 0 or step == total_steps):
          nonfinite.check(ckpt.latest_step())
          dev = evaluate(predict, state.trainable["student"], task, "dev", config, batch_sharding)
          writer.write(step, {f"dev/{k}": v for k, v in dev.items()})
          ckpt.save_best(step, state.trainable["student"], dev)
          ckpt.save(state, force=True)
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
    raise
  finally:
    guard.__exit__(None, None, None)
    bar.close()
  if step < total_steps:  # stopped early (train.stop_after): resumable, nothing final yet
    ckpt.close()
    writer.close()
    return {"name": config.name, "state": state, "stopped_at": step}

  # ---- Final evaluation, export, report ----
  params = state.trainable["student"]
  if config.train.select_best:
    params = ckpt.best_params(params) or params
  ckpt.close()
  results = {split: evaluate(predict, params, task, split, config, batch_sharding)
             for split in eval_splits(task)}
  writer.write(total_steps, {f"final/{s}/{k}": v for s, m in results.items() for k, v in m.items()})
  writer.close()
  if main:
    print(f"{config.name}: " + ("  ".join(f"{s} {metric} {m[metric]:.4f}" for s, m in results.items())
                                 or "no labelled split to evaluate"))
  summary = {"name": config.name, "method": config.method, "task": task.name, "metric": metric,
             "student": results, "student_params": count_params(params),
             "train_seconds": time.time() - t_start, "state": state}
  if config.report.export:
    host_params = sharding.to_host(params)  # a collective: every process gathers
    if main:
      out = save_pretrained(student.cfg, host_params, workdir / "export",
                            tokenizer_dir=resolve_model_dir(tok_source))
      (out / DONE).write_text(json.dumps({k: v for k, v in summary.items() if k != "state"}))
    distributed.sync(f"export {workdir}")  # a next stage on any host reads it
  if teacher is not None and config.report.compression and results:
    from jaxdistill.train.compression import compression_report
    summary["report"] = compression_report(config, task, mesh, batch_sharding, teacher, predict,
                                           params, results, workdir, summary["train_seconds"])
  return summary
