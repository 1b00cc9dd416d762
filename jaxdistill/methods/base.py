"""The extension point: `Method` (one object per run, with hooks that default to nothing
special), `Term` (one weighted loss term with its own hyperparameters) and their registries.

    @register("my_method")
    class MyMethod(Distill):          # or Method
      def student_forward(self, models, trainable, teacher_params, batch, key, step): ...

A method module registers itself when imported: the package's own modules on
`import jaxdistill.methods`, a user's file through `config.method_module`
(`load_method_module`). The trainer (jaxdistill/train) knows only the hooks below; it never
names a method.

Hooks, in the order a run uses them:
- `stages(config)` (classmethod): the stages a run of this method expands into (pipeline).
- `teacher_sources(source)`: the teacher checkpoints to load (several: multi-teacher KD).
- `collect()`, `teacher_use()`: which internals each forward keeps; how the teacher is used:
  "none", "logits", "internals" or "params" (its params feed the student forward, as
  Theseus' predecessor).
- `teacher_cacheable()`: whether the teacher's outputs depend on the example alone, so the
  loop may compute them once per stage (jaxdistill/train/teacher_cache.py).
- `setup(run)`: called once the models are built (their configs, the total step count).
- `init_params(seed)`: the method's own trainable parameters (`trainable["aux"]`).
- `prepare_batch(batch, key)`: inside the jitted step, before both forwards (MLM masking).
- `student_forward(...)`, `teacher_forward(...)`: the two forward passes.
- `optimizer_labels(trainable)`: "student" / "aux" / "frozen" per parameter.
- `loss(x)`: (scalar, {name: value}) from a `StepOutputs`.
- `on_evaluate(step, student_params, metrics)`: after each dev evaluation (user callbacks).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, ClassVar, NamedTuple, Optional

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdistill.core.errors import ConfigError
from jaxdistill.core.outputs import BertOutput, Collect
from jaxdistill.core.state import TeacherInputs, materialize
from jaxdistill.models import registry as model_registry

TEACHER_USES = ("none", "logits", "internals", "params")


# ---- Terms ----------------------------------------------------------------------------------
class Inputs(NamedTuple):
  """What one loss term reads. `aux` is this term's own parameters ({} if none)."""
  student: BertOutput
  teacher: Optional[BertOutput]   # the (first) teacher's output; None if no teacher
  batch: dict                     # input_ids, attention_mask, token_type_ids, labels, example_weight, ...
  aux: dict
  student_cfg: Any
  teacher_cfg: Any
  # The models' params, for a term that runs part of a model itself (DistilBERT's MLM head
  # at the masked positions only instead of all [B, S, V] logits).
  student_params: Optional[dict] = None
  teacher_params: Optional[dict] = None
  progress: Any = 0.0             # optimizer steps / total steps, in [0, 1]: for schedules
  teachers: tuple = ()            # every teacher's output (multi-teacher terms)


@dataclasses.dataclass(frozen=True)
class Term:
  """One loss term: `term(inputs) -> scalar`. A frozen dataclass whose fields are its
  hyperparameters, built from the config by `from_config` (the only place it reads it)."""
  name: ClassVar[str] = ""
  doc: ClassVar[str] = ""
  student: ClassVar[Collect] = Collect()
  teacher: ClassVar[Optional[Collect]] = None  # None: the term needs no teacher
  # Whether it reads the teacher's task logits (so the teacher needs a trained classifier).
  reads_teacher_logits: ClassVar[bool] = True
  stream: ClassVar[str] = ""  # prepare's RNG stream name; "" = the term's name

  @classmethod
  def from_config(cls, config) -> "Term":
    return cls()

  def init_params(self, key, student_cfg, teacher_cfg) -> dict:
    return {}

  def prepare(self, batch: dict, key, student_cfg) -> dict:
    return batch

  @property
  def has_prepare(self) -> bool:
    return type(self).prepare is not Term.prepare

  def __call__(self, x: Inputs) -> jax.Array:
    raise NotImplementedError(f"loss term {self.name!r} has no __call__")


TERMS: dict[str, type[Term]] = {}


def register_term(name: str) -> Callable[[type], type]:
  """Class decorator: `config.losses.<name>` weights this term. The name is also found by
  config_lib without importing the module (it reads the decorator from the source)."""
  def deco(cls):
    if name in TERMS and TERMS[name].__qualname__ != cls.__qualname__:
      raise ValueError(f"loss term {name!r} is registered twice ({TERMS[name]} and {cls})")
    cls.name = name
    TERMS[name] = cls
    return cls
  return deco


# ---- Methods --------------------------------------------------------------------------------
class Models(NamedTuple):
  """The static structure of the run's models (hashable graphdefs and configs)."""
  student_graph: Any
  student_cfg: Any
  teacher_graphs: tuple = ()
  teacher_cfgs: tuple = ()

  @property
  def teacher_cfg(self):
    return self.teacher_cfgs[0] if self.teacher_cfgs else None


def graphdef_of(cfg):
  """A model's static structure, without initialising any weights."""
  return nnx.graphdef(nnx.eval_shape(lambda: model_registry.model_class(cfg)(cfg, rngs=nnx.Rngs(0))))


@dataclasses.dataclass(frozen=True)
class RunInfo:
  """What a method learns at `setup`: the built models and the schedule length."""
  student_cfg: Any
  teacher_cfgs: tuple
  total_steps: int

  @property
  def teacher_cfg(self):
    return self.teacher_cfgs[0] if self.teacher_cfgs else None


class StepOutputs(NamedTuple):
  """What `Method.loss` reads, inside the jitted step."""
  student: BertOutput
  teachers: tuple                 # one BertOutput per teacher (empty: none)
  batch: dict
  trainable: dict                 # {"student": params, "aux": {owner: params}}
  teacher_params: Optional[tuple]
  step: jax.Array


class Method:
  """A method with every hook at its default: plain supervised training of the student."""
  names: ClassVar[tuple[str, ...]] = ()

  def __init__(self, config):
    self.config = config  # static: read at trace time, never traced
    self.run: Optional[RunInfo] = None
    self._callbacks = tuple(load_callback(spec) for spec in tuple(config.callbacks))

  # -- before the models exist --
  @classmethod
  def stages(cls, config) -> list[dict]:
    """Stages ({"name", "set", "run"}, as config.stages) this method expands into; [] = one."""
    return []

  def teacher_sources(self, source: str) -> tuple[str, ...]:
    return (source,) if source and self.teacher_use() != "none" else ()

  def collect(self) -> tuple[Collect, Optional[Collect]]:
    return Collect(), None

  def teacher_use(self) -> str:
    return "none"

  def reads_teacher_logits(self) -> bool:
    """Whether the teacher's task head is read (it must then be trained for the task)."""
    return self.teacher_use() == "logits"

  def teacher_cacheable(self) -> bool:
    """Whether the teacher's forward is a function of the batch's rows alone, so its outputs
    can be computed once over the train split and reused every epoch (train.cache_teacher).
    Not when the batch changes inside the step (prepare_batch: MLM masking) or the teacher
    is used otherwise than by the default teacher_forward (Theseus' "params")."""
    return (self.teacher_use() in ("logits", "internals")
            and type(self).prepare_batch is Method.prepare_batch
            and type(self).teacher_forward is Method.teacher_forward)

  def needs_mlm_head(self) -> tuple[bool, bool]:
    s, t = self.collect()
    return s.mlm_logits, bool(t is not None and t.mlm_logits)

  # -- with the models --
  def setup(self, run: RunInfo) -> None:
    self.run = run

  def init_params(self, seed: int) -> dict:
    return {}

  def prepare_batch(self, batch: dict, key) -> dict:
    return batch

  def student_forward(self, models: Models, trainable: dict, teacher_params, batch: dict, key,
                      step) -> BertOutput:
    model = nnx.merge(models.student_graph, trainable["student"])
    return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                 dropout_key=key, collect=self.collect()[0])

  def teacher_forward(self, models: Models, teacher: TeacherInputs, batch: dict) -> tuple:
    if teacher.outputs is not None:  # cached once per stage (train/teacher_cache.py)
      return tuple(materialize(out) for out in teacher.outputs)
    if teacher.params is None or self.teacher_use() in ("none", "params"):
      return ()
    collect = self.collect()[1] or Collect()
    outs = []
    for graph, params in zip(models.teacher_graphs, teacher.params):
      out = nnx.merge(graph, params)(batch["input_ids"], batch["attention_mask"],
                                     batch["token_type_ids"], collect=collect)
      outs.append(jax.lax.stop_gradient(out))
    return tuple(outs)

  def optimizer_labels(self, trainable: dict) -> dict:
    return {k: jax.tree.map(lambda _: k, v) for k, v in trainable.items()}

  def loss(self, x: StepOutputs) -> tuple[jax.Array, dict]:
    raise NotImplementedError

  def on_evaluate(self, step: int, student_params, metrics: dict) -> None:
    for fn in self._callbacks:
      fn(step=step, student_params=student_params, metrics=dict(metrics), config=self.config)


METHODS: dict[str, type[Method]] = {}


def register(*names: str) -> Callable[[type], type]:
  """Class decorator: `config.method=<name>` selects this method (several names: aliases,
  e.g. the composite's "kd", "pkd", which keep their labels in reports)."""
  def deco(cls):
    for name in names:
      if name in METHODS and METHODS[name].__qualname__ != cls.__qualname__:
        raise ValueError(f"method {name!r} is registered twice ({METHODS[name]} and {cls})")
      METHODS[name] = cls
    cls.names = tuple(cls.__dict__.get("names", ())) + tuple(names)
    return cls
  return deco


STUDENT_ARCHS: dict[str, Callable] = {}


def register_student_arch(name: str) -> Callable[[Callable], Callable]:
  """Decorator: how `student.arch=<name>` builds a student from the run's config:
  fn(config, task, source, head) -> (model cfg, params, fresh names). The model itself lives
  in jaxdistill/models (models/registry.py) and takes only its own dataclass config."""
  def deco(fn):
    STUDENT_ARCHS[name] = fn
    return fn
  return deco


STAGE_KINDS: dict[str, Callable] = {}


def register_stage_kind(name: str) -> Callable[[Callable], Callable]:
  """Decorator: a stage kind (`{"run": name}` in config.stages) that is not a training run,
  e.g. a data-augmentation pass: fn(config, workdir) -> its output path ("@stage:NAME")."""
  def deco(fn):
    STAGE_KINDS[name] = fn
    return fn
  return deco


def import_path(path: str, what: str):
  """Imports a Python file (a user's method module or callbacks) by path."""
  p = Path(path)
  if not p.is_file():
    raise ConfigError(f"{what} {path!r} does not exist; give the path of a .py file")
  name = f"_jaxdistill_user_{p.stem}_{abs(hash(str(p.resolve()))) % 10**8}"
  if name in sys.modules:
    return sys.modules[name]
  spec = importlib.util.spec_from_file_location(name, p)
  module = importlib.util.module_from_spec(spec)
  sys.modules[name] = module
  spec.loader.exec_module(module)
  return module


def load_method_module(path: str) -> None:
  """Registers the methods and terms of a user's file (config.method_module)."""
  if path:
    import_path(path, "method_module")


def get(config) -> Method:
  """The method `config.method` names, constructed for this run."""
  load_method_module(config.method_module)
  if config.method not in METHODS:
    raise ConfigError(f"method={config.method!r} is not registered; registered: "
                      f"{', '.join(sorted(METHODS))}")
  return METHODS[config.method](config)


def load_callback(spec: str) -> Callable:
  """`package.module:function` or `path/to/file.py:function`, called at each evaluation as
  fn(step=, student_params=, metrics=, config=)."""
  module_name, _, fn_name = spec.rpartition(":")
  if not module_name or not fn_name:
    raise ConfigError(f"callbacks entry {spec!r}: use 'module:function' or 'file.py:function'")
  module = (import_path(module_name, "callbacks file") if module_name.endswith(".py")
            else importlib.import_module(module_name))
  fn = getattr(module, fn_name, None)
  if not callable(fn):
    raise ConfigError(f"callbacks entry {spec!r}: {module_name} has no function {fn_name!r}")
  return fn


def zeros_scalar() -> jax.Array:
  return jnp.zeros((), jnp.float32)
