"""The device mesh, where every array lives on it, and global batches from per-process data.

The mesh has two axes: `data` (pure data parallelism) and `fsdp` (data parallelism that also
shards parameters and optimizer state). The batch is split over both jointly, so the global
batch is per-device batch x data x fsdp. Parameter placement follows `config.mesh.rules`:
(regex, spec) pairs searched in a parameter's path, e.g. "student/layers/0/intermediate/kernel"
(roles: student, aux, teacher); the first match wins, a spec names one mesh axis (or None) per
dimension and () replicates. Parameters no rule matches get the default: with fsdp > 1, a
>= 2-D array's largest dimension divisible by the fsdp size is sharded over `fsdp`; everything
else (biases, LayerNorm, scalars) is replicated. Optimizer state follows its parameter.

Each process reads only its rows of every global batch and `jax.make_array_from_process_local_data`
assembles the global array; on one process that is a plain `device_put`.
"""

from __future__ import annotations

import re
from typing import Iterator, Optional

import jax
import numpy as np
from jax.experimental import mesh_utils, multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxdistill import data as data_lib

AXES = ("data", "fsdp")
BATCH = P(AXES)  # the batch dimension is split over both axes


def make_mesh(config) -> Mesh:
  """The (data, fsdp) mesh `config.mesh` asks for; one-line errors when it cannot be built."""
  devices, m = jax.devices(), config.mesh
  fsdp = int(m.get("fsdp", 1))
  if fsdp < 1:
    raise ValueError(f"mesh.fsdp={fsdp} must be >= 1 (1 = no parameter sharding)")
  if m.data > 0:
    data = m.data
  elif len(devices) % fsdp:
    raise ValueError(f"mesh.fsdp={fsdp} does not divide the {len(devices)} visible devices")
  else:
    data = len(devices) // fsdp
  n = data * fsdp
  if n > len(devices):
    raise ValueError(f"mesh.data={data} x mesh.fsdp={fsdp} needs {n} devices but only "
                     f"{len(devices)} are visible")
  if jax.process_count() > 1 and n != len(devices):
    raise ValueError(f"mesh.data={data} x mesh.fsdp={fsdp} = {n} devices, but a multi-process run "
                     f"must use all {len(devices)}; set mesh.data=-1")
  for key in ("batch_size", "eval_batch_size"):
    size = config.train[key]
    if size % n:
      raise ValueError(f"train.{key}={size} is not divisible by the {n} data-parallel devices "
                       f"(mesh.data={data} x mesh.fsdp={fsdp}); use a multiple of {n}")
  if n == len(devices):  # topology-aware on TPU; processes' devices stay contiguous
    grid = mesh_utils.create_device_mesh((data, fsdp), devices, allow_split_physical_axes=True)
  else:
    grid = np.array(devices[:n]).reshape(data, fsdp)
  return Mesh(grid, AXES)


# ---- Parameters and optimizer state ---------------------------------------------------------
def _key_name(k) -> str:
  for attr in ("key", "idx", "name"):
    if hasattr(k, attr):
      return str(getattr(k, attr))
  return str(k)


def _keys(path) -> tuple[str, ...]:
  return tuple(_key_name(k) for k in path)


def path_name(path) -> str:
  """A tree path as "student/layers/0/intermediate/kernel"."""
  return "/".join(_keys(path))


def param_spec(path: str, shape: tuple[int, ...], axis_sizes: dict, rules=()) -> P:
  """The PartitionSpec of the parameter at `path` ("student/embeddings/word/embedding") on a
  mesh with `axis_sizes` ({"data": 4, "fsdp": 2})."""
  fsdp = axis_sizes.get("fsdp", 1)
  for pattern, spec in rules:
    if re.search(pattern, path):
      spec = tuple(spec)
      if len(spec) > len(shape):
        raise ValueError(f"mesh.rules: {pattern!r} gives {path} {shape} the spec {spec} with "
                         f"more entries than dimensions")
      for dim, axis in zip(shape, spec):
        if axis is not None and (axis not in AXES or dim % axis_sizes[axis]):
          raise ValueError(f"mesh.rules: {pattern!r} shards {path} {shape} with {spec}; axes are "
                           f"{AXES} and a sharded dimension must divide by the axis size")
      return P(*spec)
  if fsdp == 1 or len(shape) < 2:
    return P()
  candidates = [i for i, d in enumerate(shape) if d % fsdp == 0]
  if not candidates:
    return P()
  dim = max(candidates, key=lambda i: shape[i])  # the first of the largest
  return P(*[("fsdp" if i == dim else None) for i in range(len(shape))])


def rules_of(config) -> tuple:
  return tuple(config.mesh.get("rules", ()) or ())


def param_shardings(mesh: Mesh, params, rules=(), role: str = "student"):
  """NamedShardings for a parameter tree (arrays or ShapeDtypeStructs) of `role`."""
  sizes = dict(mesh.shape)
  return jax.tree_util.tree_map_with_path(
      lambda p, x: NamedSharding(mesh, param_spec("/".join((role,) + _keys(p)), x.shape, sizes, rules)),
      params)


def state_shardings(mesh: Mesh, state, rules=()):
  """NamedShardings for a TrainState: trainable by the rules, each optimizer-state leaf as the
  parameter whose path it ends with (Adam's mu and nu), anything else (counts) replicated."""
  sizes, by_path = dict(mesh.shape), {}
  for path, x in jax.tree_util.tree_leaves_with_path(state.trainable):
    keys = _keys(path)
    by_path[keys] = (param_spec("/".join(keys), x.shape, sizes, rules), tuple(x.shape))

  def follow(path, x):
    keys = _keys(path)
    for i in range(len(keys)):
      spec, shape = by_path.get(keys[i:], (None, None))
      if spec is not None and shape == tuple(x.shape):
        return NamedSharding(mesh, spec)
    return NamedSharding(mesh, P())

  return type(state)(
      step=NamedSharding(mesh, P()),
      trainable=jax.tree_util.tree_map_with_path(
          lambda p, x: NamedSharding(mesh, by_path[_keys(p)][0]), state.trainable),
      opt_state=jax.tree_util.tree_map_with_path(follow, state.opt_state))


def put(tree, shardings):
  """Host-side (or single-device) values, identical on every process, as global arrays."""
  def one(x, s):
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, s, lambda index: x[index])
  if isinstance(shardings, jax.sharding.Sharding):
    return jax.tree.map(lambda x: one(x, shardings), tree)
  return jax.tree.map(one, tree, shardings)


def to_host(tree):
  """Numpy copies of (possibly sharded, multi-process) arrays, on every process; a
  collective when arrays span processes, so every process must call it."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


# ---- Batches --------------------------------------------------------------------------------
class BatchLayout:
  """Which rows of each global batch of `batch_size` this process feeds, and the global
  arrays made from them. Rows are a contiguous block when the mesh keeps each process's
  devices together (the usual case): then only that block is ever materialised."""

  def __init__(self, sharding: NamedSharding, batch_size: int):
    self.sharding, self.batch_size = sharding, batch_size
    index_map = sharding.addressable_devices_indices_map((batch_size,))
    rows = sorted({r for (s,) in index_map.values() for r in range(*s.indices(batch_size))})
    self.rows = np.asarray(rows)
    k = len(rows)
    contiguous = rows == list(range(rows[0], rows[0] + k)) and rows[0] % k == 0 and batch_size % k == 0
    self.shard: Optional[tuple[int, int]] = (rows[0] // k, batch_size // k) if contiguous else None

  def batches(self, split, **kwargs) -> Iterator[dict[str, np.ndarray]]:
    """This process's rows of `data.batches(split, batch_size, **kwargs)`."""
    if self.shard is not None:
      index, count = self.shard
      yield from data_lib.batches(split, self.batch_size, shard_index=index, num_shards=count, **kwargs)
    else:
      for batch in data_lib.batches(split, self.batch_size, **kwargs):
        yield {k: v[self.rows] for k, v in batch.items()}

  def put(self, local: dict) -> dict:
    """Global [batch_size, ...] arrays from this process's rows."""
    return {k: jax.make_array_from_process_local_data(
        self.sharding, np.asarray(v), (self.batch_size,) + np.shape(v)[1:]) for k, v in local.items()}
