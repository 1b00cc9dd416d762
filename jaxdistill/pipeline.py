"""A run as an explicit list of stages, each one resumable call of the train loop.

    stages = pipeline.plan(config, workdir)     # what will run, where
    summary = pipeline.run(config, workdir)     # runs them in order

Where stages come from, in this order:
- `config.stages` (multi-stage recipes: TinyBERT, MobileBERT, DistilBERT, MiniLM, ...), or
  else the method's own `stages(config)` (BERT-of-Theseus: replacing, then the successor),
  or else the config itself as one stage.
- A stage whose config has `teacher.finetune=True` is preceded by the teacher stage, which
  fine-tunes `teacher.source` on the task with the labels alone in `teacher.workdir`
  (default <workdir>/teacher) once; every later stage reads its export as the teacher.

Each stage is the run's config plus its `set` (dotted keys; `"@stage:NAME"` is the output of
the earlier stage NAME: a train stage's export directory, or the file a stage kind such as
`tinybert_augment` wrote). Stage i runs in <workdir>/<name>, the last in <workdir> itself, so
its export, metrics and report are the run's. A finished stage (export/DONE) is skipped and
one cut short resumes from its own checkpoint, so rerunning the command after a preemption
continues exactly where it stopped. `run` kinds other than "train" are the methods'
`register_stage_kind` functions, fn(config, workdir) -> output path.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from jaxdistill import config_lib, run_dir
from jaxdistill import distributed
from jaxdistill.core.errors import ConfigError
from jaxdistill.methods.base import METHODS, STAGE_KINDS, load_method_module
from jaxdistill.train import forks
from jaxdistill.train.loop import DONE, train_stage

log = logging.getLogger(__name__)
REF = config_lib.REF


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  kind: str             # "train" or a registered stage kind
  workdir: Path
  sets: tuple           # ((dotted key, value), ...) applied to the run's config
  last: bool = False
  keep_name: bool = False  # the stage's run keeps config.name (a method's final stage)


def finetune_config(config):
  """The teacher stage's config: fine-tunes `teacher.source` on the task with the labels alone."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.name, c.method, c.stages = f"{config.name}_teacher", "finetune", ()
    c.student.source, c.student.init, c.student.layers = config.teacher.source, "pretrained", ()
    c.teacher.source, c.teacher.finetune = "", False
    for k in c.losses:
      c.losses[k] = 0.0
      c.loss_schedules[k] = ""
    c.losses.hard_ce = 1.0
    c.train.epochs, c.optim.lr = config.teacher.epochs, config.teacher.lr
    # A multi-stage method's first train stage fine-tunes the teacher with its own config:
    # none of that stage's restrictions (frozen params, a step cap, augmented data, an MLM
    # head, a non-BERT student, callbacks) may leak into the teacher.
    c.optim.train_only, c.optim.freeze, c.train.max_steps = (), (), 0
    c.data.train_override, c.student.mlm_head, c.student.arch = "", False, "bert"
    c.callbacks = ()
    c.train.forks, c.train.fork_values = 1, ""  # one teacher, shared by every fork (train/forks.py)
  return config_lib.prune_sections(config_lib.select_method(c))


def _stage_dicts(config) -> tuple[list[dict], bool]:
  """(stage dicts, whether they are the method's own) for this config."""
  if config.stages:
    return list(config.stages), False
  load_method_module(config.method_module)
  if config.method not in METHODS:
    raise ConfigError(f"method={config.method!r} is not registered; registered: {', '.join(sorted(METHODS))}")
  return METHODS[config.method].stages(config), True


def plan(config, workdir) -> list[Stage]:
  """The stages `run` executes (the teacher stage is added by `run` where one needs it)."""
  workdir = Path(workdir)
  dicts, own = _stage_dicts(config)
  if not dicts:
    return [Stage(config.name, "train", workdir, (), last=True, keep_name=True)]
  out = []
  for i, st in enumerate(dicts):
    last = i == len(dicts) - 1
    out.append(Stage(st["name"], st.get("run", "train"), workdir if last else workdir / st["name"],
                     tuple(dict(st.get("set", {})).items()), last=last, keep_name=last and own))
  return out


def _resolve(value, outputs: dict[str, str], stage: str):
  if isinstance(value, str) and value.startswith(REF):
    ref = value[len(REF):]
    if ref not in outputs:
      raise ConfigError(f"stage {stage!r}: {value!r} names no earlier stage; earlier stages: "
                        f"{', '.join(outputs) or 'none'}")
    return outputs[ref]
  if isinstance(value, (tuple, list)):
    return type(value)(_resolve(v, outputs, stage) for v in value)
  return value


def stage_config(config, stage: Stage, outputs: dict[str, str], workdir: Path):
  """The run's config with the stage's `set` applied (references resolved)."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.stages = ()
    if not stage.keep_name:
      c.name = f"{config.name}_{stage.name}"
    if config.teacher.finetune and not config.teacher.workdir:
      c.teacher.workdir = str(Path(workdir) / "teacher")  # one teacher for every stage
  sets = dict(stage.sets)
  if "method" in sets:  # its sections first: the other keys may live in them
    config_lib.set_value(c, "method", sets.pop("method"), where=f"stage {stage.name!r}")
    config_lib.select_method(c)
  for key, value in sets.items():
    config_lib.set_value(c, key, _resolve(value, outputs, stage.name), where=f"stage {stage.name!r}")
  return config_lib.prune_sections(c)


def with_teacher(config, workdir: Path, base=None):
  """Runs the teacher stage if `config` asks for one (once: skipped when its export is
  done); returns the config with teacher.source pointing at the export. The teacher is
  fine-tuned from `base` (the run's config, default `config`), never from a stage's `set`:
  one stage's seed or restrictions must not decide the teacher every stage reads."""
  if not config.teacher.finetune:
    return config
  if not config.teacher.source:
    raise ValueError("teacher.finetune=True needs teacher.source (the checkpoint to fine-tune)")
  tdir = Path(config.teacher.workdir or Path(workdir) / "teacher")
  if not (tdir / "export" / DONE).exists():
    log.info("teacher stage: fine-tuning %s in %s", config.teacher.source, tdir)
    source = config
    if base is not None:  # the run's config, with the teacher this stage names
      source = base.copy_and_resolve_references()
      with source.unlocked():
        source.teacher = config.teacher.copy_and_resolve_references()
    train_stage(finetune_config(source), tdir)
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.teacher.source, c.teacher.finetune = str(tdir / "export"), False
  return c


def earlier_stage_seconds(config, workdir: Path, stages: list, i: int) -> dict:
  """{stage name: train seconds} of the train stages before stage i (from their export/DONE),
  and "teacher" for the teacher stage when this run fine-tunes one."""
  out, earlier = {}, [s for s in stages[:i] if s.kind == "train"]
  tuned = config.teacher.finetune or any(dict(s.sets).get("teacher.finetune") for s in stages)
  tdir = Path(config.teacher.workdir or Path(workdir) / "teacher") if tuned else None
  for name, d in ([("teacher", tdir)] if tdir else []) + [(s.name, s.workdir) for s in earlier]:
    done = Path(d) / "export" / DONE
    if done.is_file():
      out[name] = float(json.loads(done.read_text()).get("train_seconds", 0.0))
  return out


def run(config, workdir) -> dict:
  """Runs every stage in order; returns the last train stage's summary (or {})."""
  workdir = Path(workdir)
  config_lib.check_stages(config)
  stages = plan(config, workdir)
  forks.check_single_stage(config, stages)  # train.forks: one train stage (the teacher's aside)
  if distributed.is_main():  # lets a rerun of the finished run print its report (run_dir.py)
    run_dir.write_run_config(config, workdir)
  outputs: dict[str, str] = {}
  summary: dict = {}
  for i, st in enumerate(stages):
    c = with_teacher(stage_config(config, st, outputs, workdir), workdir, base=config)
    if len(stages) > 1:
      log.info("stage %d/%d %r (%s) in %s", i + 1, len(stages), st.name, st.kind, st.workdir)
    if st.kind == "train":
      if st.last or not (st.workdir / "export" / DONE).exists():
        summary = train_stage(c, st.workdir, earlier_stages=earlier_stage_seconds(
            config, workdir, stages, i), stage_name=st.name)
      else:
        log.info("stage %r is done (%s exists); skipped", st.name, st.workdir / "export" / DONE)
      outputs[st.name] = str(st.workdir / "export")
    else:
      if st.kind not in STAGE_KINDS:
        raise ConfigError(f"stage {st.name!r}: run={st.kind!r}; use one of "
                          f"{', '.join(['train', *STAGE_KINDS])}")
      outputs[st.name] = STAGE_KINDS[st.kind](c, st.workdir)
  return summary
