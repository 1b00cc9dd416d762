"""Multi-stage methods from one command: `config.stages` runs stage after stage, each resumable.

    c.stages = (
        {"name": "intermediate", "set": {"losses.tinybert_hidden": 1.0, "train.epochs": 3}},
        {"name": "prediction", "set": {"student.source": "@stage:intermediate", ...}},
    )

Each stage is the run's config plus its `set` (dotted keys, values of the key's type), run in
`<workdir>/<name>`; the last stage runs in `<workdir>` itself, so its export, metrics and
report are the run's. A stage whose output already exists is skipped, and a stage cut short
resumes from its own checkpoint, so rerunning the command after a preemption continues
exactly where it stopped. `"@stage:NAME"` in a value is the output of the earlier stage
NAME: for a train stage its export directory (a checkpoint a later stage loads as student or
teacher). `run` picks the stage kind: "train" (default), or a kind a method module registers
in its `STAGE_RUNNERS` (e.g. a data-augmentation pass), `runner(config, workdir) -> output path`.

A fine-tuned teacher (teacher.finetune=True) is shared by every stage: it is trained once in
teacher.workdir (default <workdir>/teacher).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from jaxdistill.config_lib import ConfigError, set_value

log = logging.getLogger(__name__)
REF = "@stage:"


def _runners(train_fn: Callable) -> dict[str, Callable]:
  from jaxdistill.methods import METHOD_MODULES

  def train(config, workdir: Path) -> str:
    train_fn(config, workdir)
    return str(workdir / "export")

  runners = {"train": train}
  for module in METHOD_MODULES:
    runners.update(getattr(module, "STAGE_RUNNERS", {}))
  return runners


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


def check_stages(config) -> None:
  """Validates names, kinds and keys before anything runs (a typo in stage 3 must not
  surface after stages 1 and 2 have trained for an hour)."""
  seen = set()
  for i, st in enumerate(config.stages):
    if not isinstance(st, dict) or "name" not in st:
      raise ConfigError(f"stages[{i}] must be a dict with a 'name' (and 'set', 'run')")
    unknown = set(st) - {"name", "set", "run"}
    if unknown:
      raise ConfigError(f"stages[{i}] ({st['name']}): unknown fields {sorted(unknown)}; use name, set, run")
    if st["name"] in seen or st["name"] in ("teacher", "export", "ckpt", "best"):
      raise ConfigError(f"stage name {st['name']!r} is repeated or reserved; give each stage its own name")
    seen.add(st["name"])
    probe = config.copy_and_resolve_references()
    for key, value in dict(st.get("set", {})).items():
      set_value(probe, key, value if not (isinstance(value, str) and value.startswith(REF)) else "",
                where=f"stage {st['name']!r}")


def stage_config(config, stage: dict, outputs: dict[str, str], workdir: Path):
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.stages = ()
    c.name = f"{config.name}_{stage['name']}"
    if config.teacher.finetune and not config.teacher.workdir:
      c.teacher.workdir = str(workdir / "teacher")  # one teacher for every stage
  for key, value in dict(stage.get("set", {})).items():
    set_value(c, key, _resolve(value, outputs, stage["name"]), where=f"stage {stage['name']!r}")
  return c


def run_stages(config, workdir, train_fn: Callable) -> dict:
  """Runs every stage in order; returns the last train stage's summary (or {})."""
  workdir = Path(workdir)
  check_stages(config)
  runners = _runners(train_fn)
  outputs: dict[str, str] = {}
  summary = {}
  stages = list(config.stages)
  for i, st in enumerate(stages):
    kind = st.get("run", "train")
    if kind not in runners:
      raise ConfigError(f"stage {st['name']!r}: run={kind!r}; use one of {', '.join(runners)}")
    last = i == len(stages) - 1
    sdir = workdir if last else workdir / st["name"]
    c = stage_config(config, st, outputs, workdir)
    log.info("stage %d/%d %r (%s) in %s", i + 1, len(stages), st["name"], kind, sdir)
    if kind == "train":
      if last or not (sdir / "export" / "DONE").exists():
        summary = train_fn(c, sdir)
      else:
        log.info("stage %r is done (%s exists); skipped", st["name"], sdir / "export" / "DONE")
      outputs[st["name"]] = str(sdir / "export")
    else:
      outputs[st["name"]] = runners[kind](c, sdir)
  return summary
