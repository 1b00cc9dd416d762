"""The teacher outputs the losses read, computed once per stage over the train split.

When the teacher's inputs are fixed (`Method.teacher_cacheable()`: no masking or augmentation
inside the step, the default teacher forward; teacher dropout is off anyway) its outputs are a
function of the example alone, so running it in every step of every epoch repeats the same
work. `build` runs it once over the train split and `TeacherCache.rows` gives each batch its
rows (the step's `TeacherInputs.outputs`); the step then runs no teacher.

What is kept. The teacher's BertOutput under the method's teacher Collect holds more than the
losses read: PKD's skip map reads 2 of the 7 hidden states, MiniLM one layer's scores and
values, KD only the logits. `read_leaves` traces the method's loss with the teacher's outputs
as inputs and keeps the leaves an equation of the traced program reads; the others become
`Unread` placeholders (core/state.py), zeros in the step that nothing reads. (Collect has no
finer selection, e.g. [CLS] only, so a read leaf is kept whole.) Each leaf is stored in the
dtype the teacher's forward returns it (train.dtype for the internals, float32 for the head's
logits, as in the step) at the split's full length, and cut to each batch's bucketed length
(`train.bucket_multiple`): at full length every position holds what the step's own forward at
any shorter length computes (padding keys are masked), so any bucketing reads the same values.
A cache of sequence-free leaves only (logits, as KD) is computed at bucketed lengths instead.

Where. In host memory up to IN_MEMORY_MIB; above that, one memory-mapped .npy per leaf under
<workdir>/teacher_cache/, reused by a resumed stage. Each file is written under a temporary
name and renamed when complete, and manifest.json, written last, holds a fingerprint of what
the cache was computed from (the teachers' configs and parameter checksums, the split's tokens,
the leaves): a stage killed while writing leaves no manifest and a changed teacher or split
another fingerprint, so the next run recomputes the cache instead of reading garbage.

Budget: `train.teacher_cache_mib`. A cache that needs more is not built: the teacher runs in
the step as it does without the cache, and one warning names the size and the key to raise.

Multi-process runs: every process computes and holds the whole cache, as the logits cache did
(each epoch's batches give a process other rows, and the pass is cheap next to training); with
several processes each writes its own directory, so a shared workdir never has two writers.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxdistill import data as data_lib
from jaxdistill.core import rng
from jaxdistill.core.errors import ConfigError
from jaxdistill.core.outputs import Collect
from jaxdistill.core.state import Unread
from jaxdistill.methods.base import StepOutputs
from jaxdistill.train import sharding

log = logging.getLogger(__name__)
IN_MEMORY_MIB = 256      # caches up to this size stay in host memory; larger ones are memmapped
MANIFEST = "manifest.json"
VERSION = 1              # bump when the file layout or what a fingerprint covers changes
MIB = 1 << 20


@dataclasses.dataclass(frozen=True)
class Leaf:
  """One array of one teacher's BertOutput: its place in the flattened tree and one example's
  shape at the split's full length."""
  teacher: int
  name: str             # "t0/hidden_states/2": also its file name
  shape: tuple          # one example's
  dtype: str
  seq_axes: tuple       # axes of `shape` that are the sequence (cut to each batch's length)
  read: bool            # whether the loss reads it; only read leaves are stored

  @property
  def nbytes(self) -> int:
    return math.prod(self.shape) * jnp.dtype(self.dtype).itemsize

  def cut(self, seq_len: int) -> tuple:
    return tuple(slice(0, seq_len) if a in self.seq_axes else slice(None) for a in range(len(self.shape)))


class TeacherCache:
  """The cached outputs: per teacher, the tree structure and its leaves ([N, ...] arrays for
  the read ones, in memory or memmapped)."""

  def __init__(self, treedefs: tuple, leaves: list[Leaf], arrays: dict[str, np.ndarray], where: str):
    self.treedefs, self.leaves, self.arrays, self.where = treedefs, leaves, arrays, where

  @property
  def nbytes(self) -> int:
    return sum(a.nbytes for a in self.arrays.values())

  def rows(self, index: np.ndarray, seq_len: int, batch_size: int) -> tuple:
    """One BertOutput per teacher: the rows `index` (padding rows, -1, read row 0; they
    carry weight 0), every sequence axis cut to `seq_len`; unread leaves as `Unread` of the
    global batch's shape."""
    idx = np.maximum(np.asarray(index), 0)
    outs = []
    for t, treedef in enumerate(self.treedefs):
      leaves = []
      for leaf in (x for x in self.leaves if x.teacher == t):
        if leaf.read:
          leaves.append(self.arrays[leaf.name][(idx,) + leaf.cut(seq_len)])
        else:
          shape = tuple(seq_len if a in leaf.seq_axes else d for a, d in enumerate(leaf.shape))
          leaves.append(Unread((batch_size,) + shape, leaf.dtype))
      outs.append(jax.tree.unflatten(treedef, leaves))
    return tuple(outs)


def _forward(graph, collect: Collect, params, batch: dict):
  """The teacher's forward exactly as Method.teacher_forward runs it in the step."""
  return nnx.merge(graph, params)(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"],
                                  collect=collect)


def _tokens_at(batch: dict, length: int) -> dict:
  return {k: jax.ShapeDtypeStruct(v.shape[:1] + (length,), v.dtype)
          for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


def read_leaves(method, models, trainable, batch: dict, outputs: tuple, seed: int) -> list[list[bool]]:
  """For each teacher, whether the method's loss reads each leaf of its output (flattened
  order): the loss traced to a jaxpr with every leaf an input, a leaf read when an equation
  takes it or the program returns it. Conservative: a leaf passed into a nested call counts
  as read even if the callee ignores it."""
  flat = [jax.tree.leaves(o) for o in outputs]
  treedefs = [jax.tree.structure(o) for o in outputs]

  def loss(leaves, trainable, batch):
    outs, i = [], 0
    for treedef, f in zip(treedefs, flat):
      outs.append(jax.tree.unflatten(treedef, leaves[i:i + len(f)]))
      i += len(f)
    step = jnp.zeros((), jnp.int32)
    key = rng.step_key(seed, step)
    b = method.prepare_batch(batch, key)
    student = method.student_forward(models, trainable, None, b, key, step)
    return method.loss(StepOutputs(student, tuple(outs), b, trainable, None, step))[0]

  closed = jax.make_jaxpr(loss)([x for f in flat for x in f], trainable, batch)
  inputs = closed.jaxpr.invars[:sum(len(f) for f in flat)]
  taken = {id(v) for eqn in closed.jaxpr.eqns for v in eqn.invars} | {id(v) for v in closed.jaxpr.outvars}
  read, i = [], 0
  for f in flat:
    read.append([id(v) in taken for v in inputs[i:i + len(f)]])
    i += len(f)
  return read


def describe(method, models, teacher_params: tuple, split, batch_size: int, seed: int,
             trainable) -> tuple[tuple, list[Leaf]]:
  """(treedefs, leaves): every teacher's output structure at the split's full length, which
  leaves the loss reads and which axes are the sequence (found by shaping the forward at two
  lengths)."""
  length = split.max_length
  example = next(data_lib.batches(split, batch_size, train=False, bucket_multiple=length))
  batch = {k: jax.ShapeDtypeStruct((batch_size,) + v.shape[1:], v.dtype) for k, v in example.items()}
  collect = method.collect()[1] or Collect()
  outs, shorter = [], []
  for graph, params in zip(models.teacher_graphs, teacher_params):
    fwd = functools.partial(_forward, graph, collect)
    outs.append(jax.eval_shape(fwd, params, _tokens_at(batch, length)))
    shorter.append(jax.eval_shape(fwd, params, _tokens_at(batch, max(1, length - 1))))
  read = read_leaves(method, models, trainable, batch, tuple(outs), seed)
  leaves = []
  for t, (out, short) in enumerate(zip(outs, shorter)):
    paths = jax.tree_util.tree_flatten_with_path(out)[0]
    for (path, full), cut, r in zip(paths, jax.tree.leaves(short), read[t], strict=True):
      seq = tuple(a - 1 for a in range(1, len(full.shape)) if full.shape[a] != cut.shape[a])
      leaves.append(Leaf(t, f"t{t}/{sharding.path_name(path)}", tuple(full.shape[1:]),
                         jnp.dtype(full.dtype).name, seq, r))
  return tuple(jax.tree.structure(o) for o in outs), leaves


def check_budget(value) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
    raise ConfigError(f"train.teacher_cache_mib={value!r} must be a number >= 0 (MiB of cached "
                      "teacher outputs); set train.cache_teacher=False to never cache")
  return float(value)


def build(config, workdir, method, models, teacher_params: Optional[tuple], task, mesh,
          batch_sharding, student_params) -> Optional[TeacherCache]:
  """This stage's cache, or None: the teacher then runs in the step (no teacher in the step,
  a method whose teacher inputs change per step, the cache switched off, or over budget)."""
  t = config.train
  budget = check_budget(t.teacher_cache_mib)
  if not teacher_params or not (t.cache_teacher and t.cache_teacher_logits) or not method.teacher_cacheable():
    return None
  split = task.splits["train"]
  trainable = jax.eval_shape(lambda: {"student": student_params, "aux": method.init_params(config.seed)})
  try:
    treedefs, leaves = describe(method, models, teacher_params, split, t.batch_size, config.seed, trainable)
  except Exception as e:  # e.g. a loss that reads the teacher's params, which the cache drops
    log.warning("teacher cache: off, the loss cannot be traced on cached teacher outputs (%s: %s); "
                "the teacher runs in every step", type(e).__name__, e)
    return None
  collect = method.collect()[1] or Collect()
  read = [leaf for leaf in leaves if leaf.read]
  need = len(split) * sum(leaf.nbytes for leaf in read) / MIB
  if need > budget:
    log.warning("teacher cache: off, the %d teacher output(s) the losses read need %.1f MiB over "
                "the %d train examples, more than train.teacher_cache_mib=%g; the teacher runs in "
                "every step (raise train.teacher_cache_mib to %d to cache them)",
                len(read), need, len(split), budget, math.ceil(need))
    return None
  start = time.time()
  if need <= IN_MEMORY_MIB:
    arrays = {leaf.name: np.empty((len(split),) + leaf.shape, jnp.dtype(leaf.dtype)) for leaf in read}
    compute(config, models, teacher_params, split, mesh, batch_sharding, leaves, arrays, collect)
    where, how = "host memory", "computed"
  else:
    directory = cache_dir(workdir)
    if jax.process_count() > 1:
      directory = directory / f"process_{jax.process_index()}"
    key = fingerprint(models, teacher_params, split, leaves, mesh)
    arrays, how = load(directory, key, len(split), read), "reused"
    if arrays is None:
      arrays, how = write(directory, key, config, models, teacher_params, split, mesh, batch_sharding,
                          leaves, collect), "computed"
    where = str(directory)
  log.info("teacher cache: %s, %d of %d teacher output(s) over %d train examples, %.1f MiB in %s (%.1f s)",
           how, len(read), len(leaves), len(split), need, where, time.time() - start)
  return TeacherCache(treedefs, leaves, arrays, where)


def compute(config, models, teacher_params: tuple, split, mesh, batch_sharding, leaves: list[Leaf],
            arrays: dict, collect: Collect) -> None:
  """Fills `arrays` (one [N, ...] per read leaf) with each teacher's forward over the split in
  order, at full length when a read leaf has a sequence axis. In train-sized batches: then the
  pass costs what one epoch of the step's own teacher forwards did (on 2 CPU cores, batches of
  128 took 1.4x as long per example)."""
  bs = config.train.batch_size
  layout = sharding.BatchLayout(batch_sharding, bs)
  sequence = any(leaf.seq_axes for leaf in leaves if leaf.read)
  bucket = split.max_length if sequence else config.train.bucket_multiple
  forwards = []
  for t, graph in enumerate(models.teacher_graphs[:len(teacher_params)]):
    mine = [x for x in leaves if x.teacher == t]
    positions = [i for i, leaf in enumerate(mine) if leaf.read]

    def picked(params, batch, graph=graph, positions=positions):  # only read leaves leave the device
      flat = jax.tree.leaves(_forward(graph, collect, params, batch))
      return [flat[i] for i in positions]

    forwards.append((jax.jit(picked, out_shardings=NamedSharding(mesh, P())),
                     [x.name for x in mine if x.read]))
  for rows, batch in zip(data_lib.batch_plan(split.lengths, bs, train=False),
                         layout.batches(split, train=False, bucket_multiple=bucket), strict=True):
    placed = layout.put(batch)
    for params, (fwd, names) in zip(teacher_params, forwards):
      for name, out in zip(names, fwd(params, placed)):
        store(arrays[name], rows, np.asarray(out)[:len(rows)])


def store(array: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
  """array[rows] = values: one eval batch's rows (consecutive, in split order)."""
  array[rows[0]:rows[-1] + 1] = values


# ---- On disk ----------------------------------------------------------------------------------
def _storage(dtype) -> np.dtype:
  """How a leaf's dtype is written to .npy: itself, or (bfloat16 and other ml_dtypes, which the
  .npy header cannot name) unsigned ints of its width, viewed back on load."""
  dtype = np.dtype(dtype)
  return dtype if dtype.kind in "biuf" else np.dtype(f"u{dtype.itemsize}")


def _file(directory: Path, leaf: Leaf) -> Path:
  return directory / (leaf.name.replace("/", ".") + ".npy")


def fingerprint(models, teacher_params: tuple, split, leaves: list[Leaf], mesh) -> str:
  """What the cache was computed from: the teachers' configs and parameters (per-leaf sums
  and sums of squares, on device), the split's tokens, the leaves and the layout version."""
  def sums(params):
    return jnp.stack([f(x.astype(jnp.float32)) for x in jax.tree.leaves(params)
                      for f in (jnp.sum, lambda y: jnp.sum(y * y))])
  h = hashlib.sha256(json.dumps({"version": VERSION, "rows": len(split),
                                 "teachers": [repr(c) for c in models.teacher_cfgs],
                                 "leaves": [dataclasses.astuple(x) for x in leaves]},
                                default=str).encode())
  for params in teacher_params:
    h.update(np.asarray(jax.jit(sums, out_shardings=NamedSharding(mesh, P()))(params)).tobytes())
  for a in (split.input_ids, split.token_type_ids, split.lengths):
    h.update(np.ascontiguousarray(a).tobytes())
  return h.hexdigest()


def load(directory: Path, key: str, rows: int, read: list[Leaf]) -> Optional[dict]:
  """The complete cache `key` names, memmapped read-only; None when there is none (no
  manifest: never finished, or killed while writing), another fingerprint, or a file that
  does not match the manifest."""
  try:
    manifest = json.loads((directory / MANIFEST).read_text())
    if manifest.get("key") != key:
      return None
    arrays = {}
    for leaf in read:
      a = np.load(_file(directory, leaf), mmap_mode="r")
      if a.shape != (rows,) + leaf.shape or a.dtype != _storage(leaf.dtype):
        return None
      arrays[leaf.name] = a.view(jnp.dtype(leaf.dtype))
    return arrays
  except (OSError, ValueError, KeyError):
    return None


def write(directory: Path, key: str, config, models, teacher_params: tuple, split, mesh,
          batch_sharding, leaves: list[Leaf], collect: Collect) -> dict:
  """Computes the cache into memmapped files: each under a temporary name, renamed once
  complete, then the manifest (itself renamed into place), so only a finished cache loads."""
  shutil.rmtree(directory, ignore_errors=True)  # a stale or half-written cache
  directory.mkdir(parents=True)
  read = [leaf for leaf in leaves if leaf.read]
  files = {leaf.name: np.lib.format.open_memmap(str(_file(directory, leaf)) + ".partial", mode="w+",
                                                 dtype=_storage(leaf.dtype), shape=(len(split),) + leaf.shape)
           for leaf in read}
  compute(config, models, teacher_params, split, mesh, batch_sharding, leaves,
          {leaf.name: files[leaf.name].view(jnp.dtype(leaf.dtype)) for leaf in read}, collect)
  for leaf in read:
    files[leaf.name].flush()
    del files[leaf.name]
    os.replace(str(_file(directory, leaf)) + ".partial", _file(directory, leaf))
  tmp = directory / (MANIFEST + ".partial")
  tmp.write_text(json.dumps({"key": key, "version": VERSION,
                             "leaves": {x.name: [list(x.shape), x.dtype] for x in read}}, indent=1))
  os.replace(tmp, directory / MANIFEST)
  arrays = load(directory, key, len(split), read)
  if arrays is None:
    raise RuntimeError(f"teacher cache: {directory} does not read back after writing it")
  return arrays


def cache_dir(workdir) -> Path:
  return Path(workdir) / "teacher_cache"


def release(workdir) -> None:
  """Deletes a finished stage's memory-mapped cache (GBs at full length): a resumed run needs
  it, a finished one never reads it again."""
  shutil.rmtree(cache_dir(workdir), ignore_errors=True)
