"""The whole-run benchmark's framework-free part: which run, at what size, on which teacher.

Both sides rebuild the run's config from one `Spec` with these functions (run_bench.py's
jax child, torch_run.py's torch child), so they cannot disagree on a setting: the config
file, its variant and overrides, the size options, the teacher. No JAX and no torch here:
the torch side must not pay for importing JAX, nor the jax side for torch.

Also here: the checks that refuse what the PyTorch reproduction does not implement (one-line
ConfigErrors naming what to change), the layer maps both sides use, the fingerprint of the
batches a run trains on (so the two sides can be shown to have seen the same examples in the
same order) and the CPU description printed beside the figures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
from pathlib import Path

import numpy as np

from jaxdistill import config_lib
from jaxdistill.core.errors import ConfigError
from jaxdistill.data import batch_plan

# Loss terms torch_run.py reproduces (the formulas of jaxdistill/methods/{kd,pkd,lad,minilm}.py).
SUPPORTED_TERMS = ("hard_ce", "kd", "pkd", "lad", "minilm_attention", "minilm_value")
# Labels of the composite method whose terms are the ones above.
SUPPORTED_METHODS = ("finetune", "distill", "kd", "pkd", "lad", "minilm")
# Sequence-classification tasks whose primary metric is accuracy (what the torch side scores).
SUPPORTED_TASKS = ("rotten_tomatoes", "amazon_food")


@dataclasses.dataclass
class Spec:
  """Everything that decides a benchmarked run; written as JSON for the child processes."""
  config: str                      # configs/x.py[:variant]
  overrides: list = dataclasses.field(default_factory=list)  # [[dotted key, text], ...]
  train_examples: int = 0          # data.max_examples (every split keeps its first N rows)
  epochs: int = 0                  # train.epochs of the run, or of every stage that sets it
  teacher: str = ""                # a fine-tuned teacher export; "" = the config's own teacher
  compile_cache: str = ""          # jax: a persistent XLA cache dir ("" = none: a first run)

  def save(self, path) -> None:
    Path(path).write_text(json.dumps(dataclasses.asdict(self), indent=2))

  @classmethod
  def load(cls, path) -> "Spec":
    return cls(**json.loads(Path(path).read_text()))


def run_config(spec: Spec, *, finetune_teacher: bool = False):
  """The run's config: the file, its overrides, the size options, the teacher.

  The compression report is switched off (the PyTorch script writes none; it is not part of
  "command to exported student"). `finetune_teacher=True` keeps `teacher.finetune` as the
  config has it, for the one-off teacher stage that runs before anything is timed."""
  c = config_lib.load_config(spec.config)
  config_lib.apply_overrides(c, [tuple(kv) for kv in spec.overrides])
  with c.unlocked():
    if spec.train_examples:
      c.data.max_examples = int(spec.train_examples)
    if spec.epochs:
      c.train.epochs = int(spec.epochs)
      c.stages = tuple({**st, "set": {**st["set"], "train.epochs": int(spec.epochs)}}
                       if "train.epochs" in st.get("set", {}) else st for st in c.stages)
    c.report.compression = False
    c.train.stop_after = 0
    if spec.teacher and not finetune_teacher:
      c.teacher.source, c.teacher.finetune, c.teacher.workdir = str(spec.teacher), False, ""
  config_lib.check_stages(c)
  return c


@dataclasses.dataclass(frozen=True)
class StagePlan:
  name: str
  config: object   # the stage's ConfigDict, "@stage:" references resolved
  workdir: Path
  last: bool


def stage_plans(config, workdir) -> list[StagePlan]:
  """The run's train stages as pipeline.plan / pipeline.stage_config expand them (the same
  workdirs, the same `set` applied, "@stage:NAME" = that stage's export), without JAX."""
  workdir = Path(workdir)
  if not config.stages:
    return [StagePlan(config.name, config, workdir, True)]
  out, outputs = [], {}
  for i, st in enumerate(config.stages):
    if st.get("run", "train") != "train":
      raise ConfigError(f"stage {st['name']!r} runs {st['run']!r}; the whole-run benchmark "
                        "reproduces train stages only (pick a config without it)")
    last = i == len(config.stages) - 1
    d = workdir if last else workdir / st["name"]
    c = config.copy_and_resolve_references()
    sets = dict(st.get("set", {}))
    with c.unlocked():
      c.stages, c.name = (), f"{config.name}_{st['name']}"
    if "method" in sets:
      config_lib.set_value(c, "method", sets.pop("method"))
      config_lib.select_method(c)
    for key, value in sets.items():
      if isinstance(value, str) and value.startswith(config_lib.REF):
        value = outputs[value[len(config_lib.REF):]]
      config_lib.set_value(c, key, value, where=f"stage {st['name']!r}")
    out.append(StagePlan(st["name"], config_lib.prune_sections(c), d, last))
    outputs[st["name"]] = str(d / "export")
  return out


def active_terms(c) -> dict[str, float]:
  return {k: float(w) for k, w in c.losses.items() if float(w) != 0.0}


def check_supported(c) -> None:
  """Refuses, in one line, a stage config the PyTorch reproduction would get wrong."""
  terms = active_terms(c)
  if c.method not in SUPPORTED_METHODS:
    raise ConfigError(f"method={c.method!r}: the PyTorch side reproduces "
                      f"{', '.join(SUPPORTED_METHODS)}; run --sides jax for other methods")
  other = sorted(set(terms) - set(SUPPORTED_TERMS))
  if other:
    raise ConfigError(f"losses {other} are not reproduced in PyTorch (supported: "
                      f"{', '.join(SUPPORTED_TERMS)}); set them to 0 or run --sides jax")
  if any(c.loss_schedules.get(k, "") for k in terms) or ("kd" in c and c.kd.temperature_schedule):
    raise ConfigError("loss or temperature schedules are not reproduced in PyTorch; drop "
                      "loss_schedules.* / kd.temperature_schedule or run --sides jax")
  if c.data.task not in SUPPORTED_TASKS or c.data.train_override:
    raise ConfigError(f"data.task={c.data.task!r}: the whole-run benchmark scores "
                      f"{', '.join(SUPPORTED_TASKS)} (without data.train_override)")
  if c.student.arch != "bert" or c.student.init not in ("layers", "pretrained") or c.student.mlm_head:
    raise ConfigError("the PyTorch side builds BERT students from a checkpoint "
                      "(student.init=layers or pretrained, student.arch=bert, no mlm_head)")
  if c.optim.grad_accum != 1 or c.optim.train_only or c.optim.freeze:
    raise ConfigError("optim.grad_accum, optim.train_only and optim.freeze are not reproduced "
                      "in PyTorch; leave them at their defaults")
  if "lad" in c and c.lad.get("average_over", "tokens") != "tokens":
    raise ConfigError("lad.average_over=padded depends on each side's padding (buckets vs the "
                      "longest row); the comparison needs lad.average_over=tokens")
  if c.train.dtype not in ("float32", "bfloat16"):
    raise ConfigError(f"train.dtype={c.train.dtype!r}; use float32 or bfloat16")


# ---- layer maps (jaxdistill/losses/layer_maps.py, restated without JAX for the torch side) ----
def layer_pairs(kind: str, student_layers: int, teacher_layers: int, pairs=()) -> list:
  """(student, teacher) hidden-state indices, 1 = the first layer's output."""
  s, t = student_layers, teacher_layers
  if pairs:
    return [tuple(int(v) for v in p) for p in pairs]
  if kind == "uniform":
    return [(i, (i * t) // s) for i in range(1, s + 1)]
  if kind == "skip":
    return [(i, i * (t // s)) for i in range(1, s)]
  if kind == "last":
    return [(i, t - s + i) for i in range(1, s)]
  raise ConfigError(f"pkd.layer_map={kind!r} is not reproduced in PyTorch; use skip, last, "
                    "uniform or explicit pkd.pairs")


def teacher_layer_index(teacher_layer: int, num_layers: int) -> int:
  """0-based layer index of minilm.teacher_layer (1..L, or -L..-1 from the end)."""
  return teacher_layer - 1 if teacher_layer > 0 else num_layers + teacher_layer


# ---- what a run trains on ------------------------------------------------------------------
def train_plan_fingerprint(input_ids: np.ndarray, lengths: np.ndarray, batch_size: int,
                           seed: int, epochs: int, max_steps: int = 0) -> dict:
  """Steps, examples and a SHA-256 over every train batch's row indices and token ids, in
  order, for the plan both trainers follow (jaxdistill.data.batch_plan, remainder dropped).
  Each side hashes its own tokenisation: equal digests mean the same ids in the same batches."""
  h = hashlib.sha256()
  steps = examples = 0
  per_epoch = len(lengths) // batch_size
  total = per_epoch * epochs if not max_steps else min(per_epoch * epochs, max_steps)
  for epoch in range(epochs):
    for rows in batch_plan(lengths, batch_size, train=True, seed=seed, epoch=epoch,
                           drop_remainder=True):
      if steps >= total:
        break
      h.update(np.asarray(rows, np.int64).tobytes())
      for r in rows:
        h.update(np.asarray(input_ids[r, :lengths[r]], np.int64).tobytes())
      steps += 1
      examples += len(rows)
  return {"steps": steps, "examples": examples, "sha256": h.hexdigest()}


def cpu_info() -> dict:
  """The CPU model, the vector/matrix extensions that decide matmul speed, and the cores."""
  model, flags = platform.processor() or "unknown", set()
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      key, _, value = line.partition(":")
      if key.strip() == "model name":
        model = value.strip()
      elif key.strip() == "flags":
        flags = set(value.split())
  except OSError:
    pass
  wanted = sorted(f for f in flags if f in ("avx2", "fma") or f.startswith(("avx512", "amx")))
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  return {"model": model, "flags": wanted, "logical_cpus": os.cpu_count(), "usable_cpus": cores}
