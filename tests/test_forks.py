"""train.forks: K students in one jitted program. The reference for fork i is a separate,
ordinary run with seed=seed+i and train.data_seed=seed (or the swept value), trained by the
plain single-student step: params, train losses and dev metrics must agree to fp32 noise.
Also: resuming a forked run mid-way ends bit-exactly where the uninterrupted one does,
Theseus draws its module masks per fork, and bad values are one-line errors."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdistill.config_lib import base_config, load_config
from jaxdistill.core import rng
from jaxdistill.core.errors import ConfigError
from jaxdistill.core.state import TeacherInputs
from jaxdistill.methods import theseus
from jaxdistill.methods.base import RunInfo
from jaxdistill.models import BertModel, tiny_config
from jaxdistill.models.hub import params_of
from jaxdistill.pipeline import run as run_pipeline
from jaxdistill.testing import tiny_checkpoint
from jaxdistill.train import forks
from jaxdistill.train.build import select_layers
from jaxdistill.train.loop import DONE
from jaxdistill.train.step import (init_state, jit_train_step, make_mesh, make_optimizer, models_of,
                                   optimizer_labels)

K = 2
PARAM_ATOL = 1e-5  # fp32 noise: batched (vmapped) matmuls vs plain ones, amplified by Adam on tiny grads


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
  d = tmp_path_factory.mktemp("ckpts")
  labels = ("rotten", "fresh")
  return {"teacher": str(tiny_checkpoint(d / "teacher", num_layers=4, label_names=labels, seed=1)),
          "student": str(tiny_checkpoint(d / "student", num_layers=2, seed=2)),
          # A narrower student: PKD then learns a [16, 32] projection, initialised per seed.
          "narrow": str(tiny_checkpoint(d / "narrow", num_layers=2, hidden_size=16, num_heads=2,
                                        intermediate_size=32, seed=3))}


def make_config(name: str, ckpts, cache, **sets):
  c = load_config(f"configs/{name}.py:tiny")
  if name != "student_finetune":
    c.teacher.source, c.teacher.finetune = ckpts["teacher"], False
  c.student.source, c.student.init, c.student.layers = ckpts["student"], "pretrained", ()
  c.optim.lr = 1e-3  # so that 6 steps move the params visibly
  c.train.eval_every, c.train.checkpoint_every = 3, 2  # two dev evaluations: a best to pick
  c.report.compression = False
  c.cache_dir = str(cache)
  for key, value in sets.items():
    node, parts = c, key.split(".")
    for part in parts[:-1]:
      node = node[part]
    node[parts[-1]] = value
  return c


def trainable(state, fork=None):
  tree = state.trainable
  if fork is not None:
    tree = jax.tree.map(lambda x: np.asarray(x)[fork], tree)
  return [np.asarray(x) for x in jax.tree.leaves(tree)]


def lines(path, prefix):
  """{step: {key: value}} of metrics.jsonl's keys starting with `prefix`."""
  out = {}
  for row in map(json.loads, path.read_text().splitlines()):
    kept = {k: v for k, v in row.items() if k.startswith(prefix)}
    if kept:
      out.setdefault(row["step"], {}).update(kept)
  return out


def assert_same_run(forked_dir, forked_state, i, separate_dir, separate):
  """Fork i of a forked run against a separate run: params, train and dev metrics, results."""
  for a, b in zip(trainable(forked_state, i), trainable(separate["state"]), strict=True):
    np.testing.assert_allclose(a, b, rtol=0, atol=PARAM_ATOL)
  fork_dir = forked_dir / f"fork{i}"
  for prefix in ("train/loss", "dev/", "final/"):
    got, want = lines(fork_dir / "metrics.jsonl", prefix), lines(separate_dir / "metrics.jsonl", prefix)
    assert got.keys() == want.keys() and got, prefix
    for step in want:
      assert got[step].keys() == want[step].keys()
      for k in want[step]:
        assert got[step][k] == pytest.approx(want[step][k], rel=1e-5, abs=1e-6), (step, k)


@pytest.fixture(scope="module")
def forked_kd(ckpts, tmp_path_factory):
  d = tmp_path_factory.mktemp("kd")
  c = make_config("kd", ckpts, d / "cache", **{"train.forks": K})
  return d, run_pipeline(c, d / "forked")


@pytest.mark.parametrize("name", ["kd", "student_finetune", "pkd"])
def test_fork_equals_a_separate_run(name, ckpts, forked_kd, tmp_path):
  sets = {}
  if name == "student_finetune":  # every weight fresh: the whole init is per seed
    sets = {"student.init": "random"}
  if name == "pkd":
    sets = {"student.source": ckpts["narrow"]}
  if name == "kd":
    root, out = forked_kd
  else:
    root = tmp_path
    out = run_pipeline(make_config(name, ckpts, tmp_path / "cache", **{"train.forks": K}, **sets),
                       root / "forked")
  assert int(out["state"].step) == 6 and len(out["forks"]) == K
  # kd checks both forks; the others fork 1 (seed + 1), the one a shared seed would get wrong.
  for i in (range(K) if name == "kd" else [1]):
    c = make_config(name, ckpts, root / "cache", **{"seed": i, "train.data_seed": 0}, **sets)
    sep = run_pipeline(c, root / f"separate{i}")
    assert_same_run(root / "forked", out["state"], i, root / f"separate{i}", sep)
    fork_config = json.loads((root / "forked" / f"fork{i}" / "config.json").read_text())
    assert fork_config["seed"] == i and fork_config["train"]["data_seed"] == 0
    for split, metrics in sep["student"].items():
      assert out["forks"][i]["student"][split] == pytest.approx(metrics, abs=1e-6)
    assert (root / "forked" / f"fork{i}" / "export" / DONE).is_file()
  # The forks really are different students, and they trained.
  f0, f1 = trainable(out["state"], 0), trainable(out["state"], 1)
  assert max(float(np.abs(a - b).max()) for a, b in zip(f0, f1)) > 1e-4
  if name == "pkd":
    assert out["state"].trainable["aux"]["pkd"]["kernel"].shape[0] == K  # a projection per fork
  summary = json.loads((root / "forked" / forks.SUMMARY).read_text())
  assert summary["seeds"] == list(range(K))
  assert [f["student"] for f in summary["per_fork"]] == [f["student"] for f in out["forks"]]


def test_resume_is_exact(ckpts, forked_kd, tmp_path):
  root, full = forked_kd
  c = make_config("kd", ckpts, root / "cache", **{"train.forks": K, "train.stop_after": 4})
  part = run_pipeline(c, tmp_path / "run")
  assert part["stopped_at"] == 4
  c = make_config("kd", ckpts, root / "cache", **{"train.forks": K})
  resumed = run_pipeline(c, tmp_path / "run")
  assert int(resumed["state"].step) == 6
  for a, b in zip(trainable(full["state"]), trainable(resumed["state"]), strict=True):
    np.testing.assert_array_equal(a, b)
  for i in range(K):
    assert resumed["forks"][i]["student"] == full["forks"][i]["student"]
    want = lines(root / "forked" / f"fork{i}" / "metrics.jsonl", "dev/")
    assert lines(tmp_path / "run" / f"fork{i}" / "metrics.jsonl", "dev/") == want


@pytest.mark.parametrize("key,values,value", [("kd.temperature", "1,4", 4.0),
                                              ("optim.lr", "1e-3,3e-4", 3e-4)])
def test_sweep_fork_equals_a_separate_run(key, values, value, ckpts, tmp_path):
  out = run_pipeline(make_config("kd", ckpts, tmp_path / "cache",
                                 **{"train.fork_values": f"{key}={values}"}), tmp_path / "forked")
  assert len(out["forks"]) == 2
  sep = run_pipeline(make_config("kd", ckpts, tmp_path / "cache", **{key: value, "train.data_seed": 0}),
                     tmp_path / "separate")
  assert_same_run(tmp_path / "forked", out["state"], 1, tmp_path / "separate", sep)
  summary = json.loads((tmp_path / "forked" / forks.SUMMARY).read_text())
  assert summary["seeds"] == [0, 0] and summary["sweep"] == {"key": key, "values": values.split(",")}


def test_theseus_masks_are_per_fork():
  """The forked step against the plain step of each seed, with the module masks each seed
  draws: they differ between the forks, and each fork's update is its seed's."""
  t_cfg = tiny_config(num_layers=4)
  t_params = jax.tree.map(np.asarray, _random_params(t_cfg, 0))
  s_cfg, s_params = select_layers(t_cfg, t_params, (0, 1))
  c = base_config("theseus")
  c.student.source, c.student.init, c.student.layers = "", "layers", (0, 1)
  c.teacher.source, c.theseus.rate, c.seed = "predecessor", 0.5, 3
  c.train.batch_size, c.optim.lr, c.train.forks = 4, 1e-3, K
  steps, run = 4, RunInfo(s_cfg, (t_cfg,), 10)
  masks = [[np.asarray(theseus.module_mask(rng.step_key(c.seed + i, t), 0.5, 2)) for t in range(steps)]
           for i in range(K)]
  assert any((a != b).any() for a, b in zip(*masks)), "seeds 3 and 4 draw the same masks"
  plan = forks.ForkPlan(c)
  plan.setup_methods(run)
  method, mesh = plan.methods[0], make_mesh(c)
  models = models_of(s_cfg, (t_cfg,))
  tx = make_optimizer(c, 10, optimizer_labels(c, method))
  plan.students = [s_params] * K
  step, state = plan.take_over(c, mesh, method, models, tx, cached=False)
  teacher, batch = TeacherInputs((t_params,), None), _batch()
  for _ in range(steps):
    state, metrics = step(state, teacher, batch)
  assert metrics["loss"].shape == (K,)
  singles = []
  for i in range(K):
    ci = forks.fork_config(c, i)
    single = jit_train_step(ci, mesh, plan.methods[i], models, tx, cached=False)
    s = init_state(s_params, {}, tx)
    for _ in range(steps):
      s, _ = single(s, teacher, batch)
    singles.append(trainable(s))
    for a, b in zip(trainable(state, i), singles[-1], strict=True):
      np.testing.assert_allclose(a, b, rtol=0, atol=PARAM_ATOL)
  # Far above that noise: what another seed's masks and dropout make of the same start.
  assert max(float(np.abs(a - b).max()) for a, b in zip(*singles)) > 100 * PARAM_ATOL


def _random_params(cfg, seed):
  """Random weights without a random-init program to compile (as tests/test_theseus.py)."""
  gen = np.random.default_rng(seed)
  abstract = params_of(nnx.eval_shape(lambda: BertModel(cfg, rngs=nnx.Rngs(0))))
  def fill(path, x):
    base = 1.0 if path[-1].key == "scale" else 0.0  # LayerNorm scales near 1
    return jnp.asarray(base + 0.05 * gen.standard_normal(x.shape), x.dtype)
  return jax.tree_util.tree_map_with_path(fill, abstract)


def _batch(b=4, s=8, vocab=128):
  gen = np.random.default_rng(0)
  mask = (np.arange(s)[None] < np.array([[8], [5], [3], [8]])).astype(np.int32)
  ids = np.where(mask == 1, gen.integers(1, vocab, (b, s)), 0).astype(np.int32)
  return {"input_ids": jnp.asarray(ids), "attention_mask": jnp.asarray(mask),
          "token_type_ids": jnp.zeros((b, s), jnp.int32), "labels": jnp.asarray([0, 1, 1, 0]),
          "example_weight": jnp.ones((b,), jnp.float32)}


@pytest.mark.parametrize("sets,match", [
    ({"train.forks": 0}, "train.forks=0 must be an integer >= 1"),
    ({"train.data_seed": -2}, "train.data_seed=-2"),
    ({"train.fork_values": "kd.temperature=2"}, "at least two values"),
    ({"train.fork_values": "kd.temperature=2,2"}, "repeats a value"),
    ({"train.fork_values": "kd.temperature=1,2", "train.forks": 3}, "gives 2 values"),
    ({"train.fork_values": "kd.temprature=1,2"}, "unknown config key"),
    ({"train.fork_values": "seed=1,2"}, "cannot sweep seed"),
])
def test_bad_values_are_one_line_errors(sets, match, ckpts, tmp_path):
  c = make_config("kd", ckpts, tmp_path / "cache", **sets)
  with pytest.raises(ConfigError, match=match) as e:
    run_pipeline(c, tmp_path / "run")
  assert "\n" not in str(e.value)


def test_refused_setups_are_one_line_errors(ckpts, tmp_path):
  c = load_config("configs/theseus.py:tiny")  # replacing, then successor fine-tuning
  c.train.forks = K
  with pytest.raises(ConfigError, match="single-stage configs only") as e:
    run_pipeline(c, tmp_path / "theseus")
  assert "\n" not in str(e.value)
  c = make_config("kd", ckpts, tmp_path / "cache", **{"train.fork_values": "optim.warmup_ratio=0.1,0.2"})
  with pytest.raises(ConfigError, match="no loss term of method=kd reads") as e:
    run_pipeline(c, tmp_path / "warmup")
  assert "\n" not in str(e.value)
