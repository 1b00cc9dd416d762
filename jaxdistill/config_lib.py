"""Configs: `get_config()` Python files, overridden from the command line.

    python -m jaxdistill.train --config configs/kd.py:tiny --workdir runs/x --config.optim.lr=3e-5

`configs/<name>.py:<arg>` passes `<arg>` to `get_config(arg)` (e.g. `tiny`). Every config
starts from `base_config(method)`, which holds every key the trainer knows and is locked, so
a typo in a config file or on the command line is an error naming the nearest valid key.

No JAX here: configs are parsed and checked in a fraction of a second, before the CLI
imports anything heavy (tests/test_layering.py checks sys.modules). Which methods, loss
terms, stage kinds and config sections exist is read from the methods' source by
jaxdistill/catalog.py, never by importing them.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
from pathlib import Path

import ml_collections

from jaxdistill.catalog import (catalog, method_names, method_owned_sections, module_sections,
                                needed_sections, sections, stage_kinds, term_names)
from jaxdistill.config_presets import (full_squad, rotten_tomatoes, squad, tiny,  # noqa: F401
                                       tiny_tokens, wnut16)  # (configs import the presets from here)
from jaxdistill.core.errors import ConfigError
from jaxdistill.data.config import default_data_config

def select_method(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Makes the config's sections those of `config.method`: adds the method's own section
  (with its defaults) when missing, drops other methods' sections. In place; returns it."""
  names = method_names(config.method_module)
  if config.method not in names:
    close = difflib.get_close_matches(config.method, names, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise ConfigError(f"method={config.method!r} is not registered{hint}; registered: "
                      f"{', '.join(names)}")
  _, owned = sections(config.method, config.method_module)
  with config.unlocked():
    for section in method_owned_sections(config.method_module) - set(owned):
      if section in config:
        del config[section]
    for section, defaults in owned.items():
      if section not in config:
        config[section] = ml_collections.ConfigDict(dict(defaults))
    for name in term_names(config.method_module):  # a user module's terms get weights
      if name not in config.losses:
        config.losses[name] = 0.0
        config.loss_schedules[name] = ""
  return config


def _needed(config) -> set[str]:
  active = [k for k, w in config.losses.items() if float(w) != 0.0]
  return needed_sections(config.method, config.student.arch, active, config.method_module)


def prune_sections(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Drops the method modules' sections this run does not read (catalog.needed_sections), so
  a stage's config.json holds only what it used. In place; returns it."""
  drop = (module_sections(config.method_module) - _needed(config)) & set(config.keys())
  with config.unlocked():
    for section in drop:
      del config[section]
  return config


def check_sections(config, stage_probes=()) -> None:
  """A value set in a section that neither the run nor any of its stages reads would be
  dropped silently: refuse it (e.g. --config.pkd.temperature=5 with losses.pkd=0)."""
  needed = set(_needed(config)).union(*(_needed(p) for p in stage_probes))
  defaults = {d.section: d.config for d in catalog(config.method_module) if d.config}
  for section in (set(defaults) & set(config.keys())) - needed:
    for key, default in defaults[section].items():
      value = config[section].get(key, default)
      if (tuple(value) if isinstance(value, list) else value) != default:
        terms = [t for d in catalog(config.method_module) if d.section == section for t in d.terms]
        how = (f"give one of its losses a weight (--config.losses.{terms[0]}=1.0)" if terms
               else f"use --config.method={section}")
        raise ConfigError(f"{section}.{key}={value!r} is set but method={config.method} with these "
                          f"losses never reads the {section} section; {how} or drop the setting")


def base_config(method: str = "finetune", method_module: str = "") -> ml_collections.ConfigDict:
  """Every key the trainer knows, for `method` (its own config section included)."""
  c = ml_collections.ConfigDict()
  c.name = ""            # run name in reports; defaults to the config file's stem
  # The method (jaxdistill/methods): a registered name. The composite method's labels
  # (finetune, kd, pkd, lad, tinybert, ...) all weight config.losses; theseus and
  # multi_teacher_kd add hooks and a config section of their own.
  c.method = method
  c.method_module = method_module  # a .py file outside the package registering methods/terms
  c.seed = 0
  c.data = default_data_config()
  c.cache_dir = ""       # tokenisation cache; "" = $XDG_CACHE_HOME/jaxdistill (~/.cache/jaxdistill)
  # The student: how it is built and initialised.
  c.student = ml_collections.ConfigDict(dict(
      source="all-MiniLM-L6-v2",  # HF directory, shipped asset alias, or hub id
      arch="bert",                # bert | mobilebert | bilstm (methods/*: register_student_arch)
      init="pretrained",          # pretrained | layers (copy `layers` of source) | random
      layers=(),                  # 0-based source layers copied when init == "layers"
      # A masked-LM head (decoder tied to the word embeddings), loaded from the source or,
      # when it has none, freshly initialised; also switched on when a loss reads MLM logits.
      mlm_head=False,
      # Architecture changes for init == "random" (0 = keep the source's value).
      hidden_size=0, num_layers=0, num_heads=0, intermediate_size=0,
  ))
  # The teacher: "" = none (plain fine-tuning); else a fine-tuned checkpoint, or, with
  # finetune=True, `source` is first fine-tuned on the task in `workdir` (a pipeline stage).
  c.teacher = ml_collections.ConfigDict(dict(
      source="", finetune=False, workdir="", epochs=3, lr=5e-5,
  ))
  # Loss terms and their weights: a weight of 0 switches a term off. loss_schedules.<term>:
  # "" (constant), "linear:END" or "cosine:END" moves the weight to END over the run.
  terms = term_names(method_module)
  c.losses = ml_collections.ConfigDict({name: 0.0 for name in terms})
  c.losses.hard_ce = 1.0
  c.loss_schedules = ml_collections.ConfigDict({name: "" for name in terms})
  c.optim = ml_collections.ConfigDict(dict(
      lr=5e-5, aux_lr=0.0, warmup_ratio=0.1, weight_decay=0.01, clip_norm=1.0,
      b1=0.9, b2=0.999, eps=1e-8, grad_accum=1,
      # Regexes searched in "student/layers/0/intermediate/kernel"-style paths (aux params:
      # "aux/<term>/..."): with train_only set, only matching params train; `freeze`
      # matches are never updated (no optimizer state either).
      train_only=(), freeze=(),
  ))
  c.train = ml_collections.ConfigDict(dict(
      epochs=3, batch_size=32, eval_batch_size=128, max_steps=0, log_every=20,
      eval_every=0,          # steps between dev evaluations; 0 = once per epoch
      checkpoint_every=200,  # steps between resumable checkpoints
      keep=2, select_best=True, dtype="float32", bucket_multiple=16,
      # Train-batch lengths: "" rounds each batch up to bucket_multiple; "auto:K" picks the
      # K lengths that pad least from the data's histogram; or "21,31,43,64" (data/buckets.py).
      buckets="",
      stop_after=0,  # stop after this many steps as if preempted (schedule unchanged); 0 = off
      # Teacher outputs the losses read, computed once over the train split and reused each
      # epoch when its inputs are fixed (train/teacher_cache.py; memmapped above 256 MiB, not
      # built over teacher_cache_mib). Either switch False runs the teacher every step.
      cache_teacher=True, cache_teacher_logits=True, teacher_cache_mib=4096,
      # NaN/Inf loss or gradients never update params or optimizer state: "skip" logs and
      # goes on, "stop" ends the run before anything after that step is saved (train/preempt.py).
      nonfinite="skip",
      # K students in one program (train/forks.py), fork i with seed+i in <workdir>/fork<i>,
      # or fork_values "KEY=v1,v2,..." (optim.lr or a loss hyperparameter) at config.seed.
      forks=1, fork_values="",
      # The train batches' order seed (-1 = config.seed): fork i == the run seed+i, data_seed=seed.
      data_seed=-1,
  ))
  # Functions called after each dev evaluation: "package.module:fn" or "path/file.py:fn",
  # fn(step=, student_params=, metrics=, config=) (methods/base.py: Method.on_evaluate).
  c.callbacks = ()
  # Logs: metrics.jsonl and TensorBoard always; Weights & Biases with wandb=True (the
  # `wandb` extra; mode "offline" writes a local run that `wandb sync` uploads later).
  c.logging = ml_collections.ConfigDict(dict(
      wandb=False, wandb_project="jaxdistill", wandb_entity="", wandb_mode="online"))
  # The device mesh (jaxdistill/train/sharding.py): data x fsdp devices, the batch split over
  # both. data=-1: every device not on fsdp. fsdp > 1 also shards parameters and optimizer
  # state; rules: ((regex, spec), ...) searched in "student/layers/0/intermediate/kernel"-style
  # paths, spec one mesh axis or None per dimension, () = replicated; the rest: the largest
  # fsdp-divisible dimension of >= 2-D params.
  c.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, rules=()))
  # Multi-process runs (jaxdistill/distributed.py): initialize auto | always | never; a
  # coordinator "host:port" with num_processes and process_id (or JAXDISTILL_* env vars).
  c.distributed = ml_collections.ConfigDict(dict(
      initialize="auto", coordinator="", num_processes=0, process_id=-1, timeout_s=300))
  # The term families' sections (jaxdistill/methods/<family>.py: CONFIG), every run has them.
  always, _ = sections(method, method_module)
  for section, defaults in always.items():
    c[section] = ml_collections.ConfigDict(dict(defaults))
  # Multi-stage methods (jaxdistill/pipeline.py): a tuple of
  # {"name": str, "run": "train" (default) or a stage kind, "set": {dotted key: value}};
  # each stage runs in <workdir>/<name> (the last in <workdir>) with the config plus its `set`.
  # A value "@stage:NAME" is that earlier stage's output (a train stage: its export).
  c.stages = ()
  c.report = ml_collections.ConfigDict(dict(
      compression=True,  # the teacher-vs-student report at the end of a distillation run
      export=True,       # write the final student as a HF checkpoint to <workdir>/export
      label="",          # the method named in reports; "" = config.method (a method's last
                         # stage may run another method, e.g. Theseus' successor fine-tuning)
      latency_batch=32, latency_iters=10))
  select_method(c)  # the method's own section
  c.lock()
  return c


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:arg]` by calling its `get_config([arg])`."""
  path, _, arg = spec.partition(":")
  p = Path(path)
  if not p.is_file():
    raise ConfigError(f"config file {path!r} does not exist; pass e.g. --config configs/kd.py")
  module_spec = importlib.util.spec_from_file_location(f"_jaxdistill_config_{p.stem}", p)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  if not hasattr(module, "get_config"):
    raise ConfigError(f"{path} has no get_config() function")
  known = config_variants(p)
  if arg and known and arg not in known:
    raise ConfigError(f"{path} has no variant {arg!r}; its variants: "
                      f"{', '.join(repr(v) for v in known)} (e.g. --config {path}:{known[0]})")
  try:
    config = module.get_config(arg) if arg else module.get_config()
  except AttributeError as e:  # a locked ConfigDict refuses unknown keys with AttributeError
    raise ConfigError(f"{path}: {e}") from None
  if not isinstance(config, ml_collections.ConfigDict) or "method" not in config:
    raise ConfigError(f"{path}: get_config() must return jaxdistill.config_lib.base_config(...)")
  if not config.name:
    with config.unlocked():
      config.name = p.stem + (f"_{arg}" if arg else "")
  return select_method(config)


def config_variants(path: Path) -> list[str]:
  """The `arg` values a config file's get_config compares against (`arg == "tiny"`,
  `arg in ("tiny", "full")`), read from its source; [] if it reads `arg` otherwise."""
  tree = ast.parse(Path(path).read_text(encoding="utf-8"))
  found = []
  for fn in tree.body:
    if not (isinstance(fn, ast.FunctionDef) and fn.name == "get_config" and fn.args.args):
      continue
    name = fn.args.args[0].arg
    for node in ast.walk(fn):
      if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == name:
        for comp in node.comparators:
          values = comp.elts if isinstance(comp, (ast.Tuple, ast.List, ast.Set)) else [comp]
          found += [v.value for v in values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
  return sorted(set(found) - {""})


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[tuple[str, str]]) -> None:
  """Applies `--config.key=value` pairs: `method` and `method_module` first (they decide
  which sections exist), then the rest in order; then checks the stages."""
  first = [(k, v) for k, v in overrides if k in ("method", "method_module")]
  for key, value in first:
    apply_override(config, key, value)
  if first:
    select_method(config)
  for key, value in overrides:
    if (key, value) not in first:
      apply_override(config, key, value)
  check_stages(config)


REF = "@stage:"
RESERVED_STAGE_NAMES = ("teacher", "export", "ckpt", "best")


def check_stages(config) -> None:
  """Validates stage names, kinds and keys before anything runs (a typo in stage 3 must
  not surface after stages 1 and 2 have trained for an hour)."""
  seen, kinds, probes = set(), stage_kinds(config.method_module), []
  for i, st in enumerate(config.stages):
    if not isinstance(st, dict) or "name" not in st:
      raise ConfigError(f"stages[{i}] must be a dict with a 'name' (and 'set', 'run')")
    unknown = set(st) - {"name", "set", "run"}
    if unknown:
      raise ConfigError(f"stages[{i}] ({st['name']}): unknown fields {sorted(unknown)}; use name, set, run")
    if st["name"] in seen or st["name"] in RESERVED_STAGE_NAMES:
      raise ConfigError(f"stage name {st['name']!r} is repeated or reserved; give each stage its own name")
    seen.add(st["name"])
    kind = st.get("run", "train")
    if kind not in kinds:
      raise ConfigError(f"stage {st['name']!r}: run={kind!r}; use one of {', '.join(kinds)}")
    probe = config.copy_and_resolve_references()
    sets = dict(st.get("set", {}))
    if "method" in sets:  # the stage's method decides which keys it has
      set_value(probe, "method", sets["method"], where=f"stage {st['name']!r}")
      select_method(probe)
    for key, value in sets.items():
      set_value(probe, key, value if not (isinstance(value, str) and value.startswith(REF)) else "",
                where=f"stage {st['name']!r}")
    probes.append(probe)
  check_sections(config, probes)


def _all_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
  keys = []
  for k, v in config.items():
    keys.append(prefix + k)
    if isinstance(v, ml_collections.ConfigDict):
      keys += _all_keys(v, prefix + k + ".")
  return keys


def _literal_or_text(text: str):
  try:
    return ast.literal_eval(text.strip())
  except (ValueError, SyntaxError):  # a bare word: the string itself
    return text.strip()


def _parse_value(text: str, current):
  if isinstance(current, bool):
    if text.lower() in ("true", "1", "yes"):
      return True
    if text.lower() in ("false", "0", "no"):
      return False
    raise ConfigError(f"expected true/false, got {text!r}")
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    if isinstance(current, tuple):  # `--config.student.layers=0,2,4`, `...label_names=neg,pos`
      return tuple(_literal_or_text(x) for x in text.split(",") if x.strip())
    raise ConfigError(f"cannot read {text!r} as {type(current).__name__}") from None
  if isinstance(current, float) and isinstance(value, int):
    value = float(value)
  if isinstance(current, tuple) and isinstance(value, (int, float, str)):
    value = (value,)
  if isinstance(current, tuple) and isinstance(value, list):
    value = tuple(value)
  if current is not None and not isinstance(value, type(current)):
    raise ConfigError(f"expected {type(current).__name__}, got {text!r}")
  return value


# Names users type from other libraries, and the key each means here.
ALIASES = {"learning_rate": "lr", "batch": "batch_size", "bs": "batch_size",
           "num_epochs": "epochs", "warmup": "warmup_ratio", "temp": "temperature",
           "T": "temperature", "alpha": "hard_ce", "max_seq_length": "max_length"}


def suggestions(config: ml_collections.ConfigDict, key: str) -> list[str]:
  """Keys near `key`: its alias (learning_rate -> lr) under the same section, then close spellings."""
  keys = _all_keys(config)
  head, _, last = key.rpartition(".")
  out = []
  if last in ALIASES:
    aliased = f"{head}.{ALIASES[last]}" if head else ALIASES[last]
    out += [aliased] if aliased in keys else [k for k in keys if k.endswith("." + ALIASES[last])]
  out += [k for k in difflib.get_close_matches(key, keys, n=3) if k not in out]
  return out[:3]


def apply_override(config: ml_collections.ConfigDict, key: str, text: str) -> None:
  """Sets `key` (dotted, e.g. optim.lr) from command-line text, keeping the key's type."""
  parts = key.split(".")
  node = config
  for i, part in enumerate(parts):
    is_leaf = i == len(parts) - 1
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      close = suggestions(config, key)
      hint = f"; did you mean {', '.join(close)}?" if close else ""
      raise ConfigError(f"unknown config key {key!r}{hint}")
    if is_leaf:
      try:
        value = _parse_value(text, node[part])
      except ConfigError as e:
        raise ConfigError(f"--config.{key}: {e}") from None
      with node.ignore_type():
        node[part] = value
    else:
      node = node[part]


def set_value(config: ml_collections.ConfigDict, key: str, value, *, where: str = "") -> None:
  """Sets dotted `key` to a Python value (a stage's `set`), checking the key and the type."""
  node, parts = config, key.split(".")
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      close = difflib.get_close_matches(key, _all_keys(config), n=3)
      hint = f"; did you mean {', '.join(close)}?" if close else ""
      raise ConfigError(f"{where + ': ' if where else ''}unknown config key {key!r}{hint}")
    if i < len(parts) - 1:
      node = node[part]
  current = node[parts[-1]]
  if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
    value = float(value)
  if isinstance(current, tuple) and isinstance(value, list):
    value = tuple(value)
  if current is not None and not isinstance(current, ml_collections.ConfigDict) and (
      type(value) is not type(current) and not (isinstance(current, tuple) and isinstance(value, tuple))):
    raise ConfigError(f"{where + ': ' if where else ''}{key} expects {type(current).__name__}, "
                      f"got {value!r}")
  with node.ignore_type():
    node[parts[-1]] = value


def parse_overrides(args: list[str]) -> list[tuple[str, str]]:
  """`--config.a.b=v` and `--config.a.b v` forms, in order."""
  out, i = [], 0
  while i < len(args):
    a = args[i]
    if not a.startswith("--config."):
      raise ConfigError(f"unexpected argument {a!r}; overrides look like --config.optim.lr=3e-5")
    body = a[len("--config."):]
    if "=" in body:
      key, val = body.split("=", 1)
    elif i + 1 < len(args):
      key, val = body, args[i + 1]
      i += 1
    else:
      raise ConfigError(f"{a} needs a value")
    out.append((key, val))
    i += 1
  return out

