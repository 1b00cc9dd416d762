"""BERT-of-Theseus: the replacement-rate schedulers, the per-module Bernoulli draw, the mixed
forward at p = 1 / p = 0 against plain BertModel forwards, the depth check, a train step that
moves the successor layers only, and a tiny end-to-end run (replacing, then successor
fine-tuning) whose export loads as an n-layer BERT."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from jaxdistill.config_lib import base_config, load_config
from jaxdistill.methods import theseus
from jaxdistill.models import BertModel, Collect, tiny_config
from jaxdistill.models.hub import load_pretrained, params_of
from jaxdistill.train.build import select_layers
from jaxdistill import methods
from jaxdistill.core import rng
from jaxdistill.methods.base import Models, RunInfo, graphdef_of
from method_helpers import build_step

B, S = 4, 8


def random_params(cfg, seed):
  """Random weights without a random-init program to compile: NumPy fills the shapes."""
  rng = np.random.default_rng(seed)
  abstract = params_of(nnx.eval_shape(lambda: BertModel(cfg, rngs=nnx.Rngs(0))))

  def fill(path, x):
    base = 1.0 if path[-1].key == "scale" else 0.0  # LayerNorm scales near 1
    return jnp.asarray(base + 0.05 * rng.standard_normal(x.shape), x.dtype)
  return jax.tree_util.tree_map_with_path(fill, abstract)


def make_batch(vocab=128):
  rng = np.random.default_rng(0)
  mask = (np.arange(S)[None] < np.array([[8], [5], [3], [8]])).astype(np.int32)
  ids = np.where(mask == 1, rng.integers(1, vocab, (B, S)), 0).astype(np.int32)
  return {"input_ids": jnp.asarray(ids), "attention_mask": jnp.asarray(mask),
          "token_type_ids": jnp.zeros((B, S), jnp.int32), "labels": jnp.asarray([0, 1, 1, 0]),
          "example_weight": jnp.ones((B,), jnp.float32)}


@pytest.fixture(scope="module")
def pair():
  """A 4-layer predecessor and a 2-successor-layer model cut from it (r = 2)."""
  t_cfg = tiny_config(num_layers=4)
  t_params = random_params(t_cfg, 0)
  s_cfg, s_params = select_layers(t_cfg, t_params, (0, 1))
  return t_cfg, t_params, s_cfg, s_params


def rates(**kw):
  return ml_collections.ConfigDict(dict(dict(scheduler="constant", rate=0.5, linear_k=0.0), **kw))


def test_schedulers():
  for t in (0, 7, 10_000):
    assert float(theseus.replacing_rate(rates(rate=0.5), t)) == pytest.approx(0.5)
  lin = rates(scheduler="linear", rate=0.3, linear_k=0.01)  # p = min(1, 0.01 t + 0.3)
  got = [float(theseus.replacing_rate(lin, t)) for t in (0, 10, 50, 69, 70, 71, 5000)]
  np.testing.assert_allclose(got, [0.3, 0.4, 0.8, 0.99, 1.0, 1.0, 1.0], atol=1e-6)
  with pytest.raises(ValueError, match="theseus.scheduler='cosine'"):
    theseus.replacing_rate(rates(scheduler="cosine"), 0)


def test_mask_rate_and_reproducibility():
  n, p = 3, 0.3
  # The train step's key for step t is fold_in(key(seed), t) (rng.step_key); the mask comes
  # from its named stream "theseus/mask".
  draw = jax.jit(jax.vmap(lambda seed, t: theseus.module_mask(rng.step_key(seed, t), p, n),
                          in_axes=(None, 0)))
  masks = np.asarray(draw(0, jnp.arange(4000)))
  assert masks.shape == (4000, n)
  assert abs(masks.mean() - p) < 0.02  # 12000 draws: 4 standard deviations ~ 0.017
  np.testing.assert_allclose(masks.mean(0), p, atol=0.04)  # every module, not just overall
  np.testing.assert_array_equal(masks, np.asarray(draw(0, jnp.arange(4000))))  # same seed/steps
  assert len({m.tobytes() for m in masks[:16]}) > 1  # steps differ
  assert not np.array_equal(masks, np.asarray(draw(1, jnp.arange(4000))))  # seeds differ


def test_p1_is_the_successor_and_p0_the_predecessor(pair):
  t_cfg, t_params, s_cfg, s_params = pair
  sg, tg = graphdef_of(s_cfg), graphdef_of(t_cfg)
  b = make_batch()
  args = (b["input_ids"], b["attention_mask"], b["token_type_ids"])
  key = jax.random.key(3)

  @jax.jit
  def mixed(take, key):
    return theseus.mixed_forward(nnx.merge(sg, s_params), nnx.merge(tg, t_params), *args, take,
                                 dropout_key=key).logits

  successor = jax.jit(lambda key: nnx.merge(sg, s_params)(*args, dropout_key=key).logits)
  predecessor = jax.jit(lambda: nnx.merge(tg, t_params)(*args).logits)
  # Equal up to float reassociation: XLA compiles a branch of a cond separately (~1e-8).
  np.testing.assert_allclose(mixed(jnp.ones(2, bool), None), successor(None), rtol=0, atol=1e-6)
  np.testing.assert_allclose(mixed(jnp.ones(2, bool), key), successor(key), rtol=0, atol=1e-6)
  np.testing.assert_allclose(mixed(jnp.zeros(2, bool), None), predecessor(), rtol=0, atol=1e-6)
  mixed_out = mixed(jnp.array([True, False]), None)
  assert np.abs(mixed_out - successor(None)).max() > 1e-4  # a real mix, neither model
  # One real branch per module (lax.cond), not both computed and selected.
  assert str(jax.make_jaxpr(mixed)(jnp.ones(2, bool), None)).count(" cond[") == 2


def test_depths_must_divide():
  assert theseus.check_depths(3, 6) == 2
  with pytest.raises(ValueError, match=r"6 layers do not split into 4 equal modules.*\[1, 2, 3, 6\]"):
    theseus.check_depths(4, 6)


def theseus_config(**kw):
  c = base_config("theseus")
  c.theseus.rate = 0.5
  c.student.source, c.student.init, c.student.layers = "", "layers", (0, 1)
  c.train.batch_size = B
  c.optim.lr = 1e-3
  for k, v in kw.items():
    setattr(c.theseus, k, v)
  return c


def test_train_step_moves_successor_layers_only(pair):
  t_cfg, t_params, s_cfg, s_params = pair
  config = theseus_config()
  _, step, init, _ = build_step(config, s_cfg, t_cfg, total_steps=10)
  state = init(s_params, {})
  before_t = jax.tree.map(np.asarray, t_params)
  before_s = jax.tree.map(np.asarray, state.trainable["student"])
  for _ in range(3):  # the first step has lr 0 (warmup starts at 0)
    state, metrics = step(state, t_params, make_batch())
  after = state.trainable["student"]
  assert np.isfinite(float(metrics["loss"]))
  for k in before_s:
    same = [np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before_s[k]), jax.tree.leaves(after[k]))]
    if k == "layers":
      assert not any(same), "every successor param trains"
    else:
      assert all(same), f"{k} is the predecessor's, frozen"
  for a, b in zip(jax.tree.leaves(before_t), jax.tree.leaves(t_params), strict=True):
    np.testing.assert_array_equal(a, b)


def test_gradients_skip_the_predecessor(pair):
  t_cfg, t_params, s_cfg, s_params = pair
  config = theseus_config(rate=1.0)  # every module the successor's
  method = methods.get(config)
  method.setup(RunInfo(s_cfg, (t_cfg,), 10))
  models = Models(graphdef_of(s_cfg), s_cfg, (graphdef_of(t_cfg),), (t_cfg,))
  batch = make_batch()

  def loss(tree):
    out = method.student_forward(models, {"student": tree["student"]}, (tree["teacher"],), batch,
                                 jax.random.key(0), 0)
    return jnp.sum(out.logits ** 2)

  g = jax.jit(jax.grad(loss))({"student": s_params, "teacher": t_params})
  assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g["teacher"]))
  assert all(float(jnp.abs(x).max()) > 0.0 for x in jax.tree.leaves(g["student"]["layers"]))


def test_config_errors(pair):
  t_cfg, _, s_cfg, _ = pair
  c = theseus_config()
  c.student.source = "/elsewhere"
  with pytest.raises(ValueError, match="leave student.source empty"):
    methods.get(c)
  three = tiny_config(num_layers=3)
  with pytest.raises(ValueError, match="3 layers do not split into 2"):
    methods.get(theseus_config()).setup(RunInfo(s_cfg, (three,), 10))


def test_end_to_end_tiny(tmp_path):
  from jaxdistill.testing import tiny_checkpoint
  from jaxdistill.pipeline import run as train_and_evaluate
  from jaxdistill.train.loop import DONE
  teacher = tiny_checkpoint(tmp_path / "teacher", num_layers=4, label_names=("rotten", "fresh"),
                            seed=1)
  c = load_config("configs/theseus.py:tiny")
  c.teacher.source, c.teacher.finetune = str(teacher), False
  c.student.layers = (0, 1)  # 4 predecessor layers -> 2 successor modules of r = 2
  c.report.compression = False
  c.cache_dir = str(tmp_path / "cache")
  out = train_and_evaluate(c, tmp_path / "run")
  assert (tmp_path / "run" / "replacing" / "export" / DONE).exists()  # stage 2 ran, exported
  assert out["method"] == "theseus" and int(out["state"].step) == 6  # stage 3: 1 epoch
  model, fresh = load_pretrained(str(tmp_path / "run" / "export"))
  assert model.config.num_layers == 2 and not fresh
