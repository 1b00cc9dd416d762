"""LAD: the gate recursion and the masked loss against NumPy references written here (a loop
over layers), the padding invariance, the width projection, the depth rule, gradients that
reach the gates and the student but not the teacher, the thesis' average over padded
positions and the g = 1 control (`lad.average_over`, `lad.gate`), and tiny end-to-end runs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdistill.config_lib import apply_overrides, base_config, load_config
from jaxdistill.core.errors import ConfigError
from jaxdistill.methods import lad
from jaxdistill.models import BertModel, BertOutput, tiny_config
from jaxdistill.models.hub import load_pretrained, params_of
from jaxdistill.methods import TERMS, Inputs
from jaxdistill.methods.base import graphdef_of
from method_helpers import build_step

B, S = 3, 6
MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]], np.int32)


def lad_config(learnable_norm=False):
  c = base_config()
  c.lad.learnable_norm = learnable_norm
  c.losses.hard_ce, c.losses.lad = 0.0, 1.0
  return c


def np_aggregate(hs, gates, learnable):
  """a_1 = h_1; g = sigmoid(a W + b); a_i = LN(g h_i + (1 - g) a), LN per token over H."""
  a, out = hs[0], [hs[0]]
  for i in range(2, len(hs) + 1):
    g_p = {k: np.asarray(v, np.float64) for k, v in gates[str(i)].items()}
    g = 1.0 / (1.0 + np.exp(-(a @ g_p["kernel"] + g_p["bias"])))
    x = g * hs[i - 1] + (1.0 - g) * a
    mu = x.mean(-1, keepdims=True)
    a = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
    if learnable:
      a = a * g_p["scale"] + g_p["offset"]
    out.append(a)
  return out


def perturb(aux, seed):
  """Gates away from their init (offsets, scales != 0, 1) so each parameter matters."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda x: x + 0.3 * rng.standard_normal(x.shape).astype(np.float32), aux)


@pytest.mark.parametrize("learnable", [False, True])
def test_recursion_matches_numpy(learnable):
  t = tiny_config(num_layers=4)
  aux = perturb(lad.init_gates(jax.random.key(0), tiny_config(), t, learnable_norm=learnable), 1)
  assert sorted(aux["gates"]) == ["2", "3", "4"] and "proj" not in aux  # a gate per depth 2..4
  assert ("scale" in aux["gates"]["2"]) == learnable
  hs = [np.random.default_rng(i).standard_normal((B, S, 32)) for i in range(4)]
  got = lad.aggregate([jnp.asarray(h, jnp.float32) for h in hs], aux["gates"])
  for g, w in zip(got, np_aggregate(hs, aux["gates"], learnable), strict=True):
    np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4)


def term_inputs(s_hidden, t_hidden, aux, s_cfg, t_cfg, weights=(1.0, 1.0, 1.0)):
  batch = {"attention_mask": jnp.asarray(MASK), "example_weight": jnp.asarray(weights, jnp.float32)}
  out = lambda hs: BertOutput(last_hidden=hs[-1], hidden_states=tuple(hs))
  return Inputs(out(s_hidden), out(t_hidden), batch, aux, s_cfg, t_cfg)


def test_loss_matches_numpy_with_projection_and_padding():
  s_cfg, t_cfg = tiny_config(hidden_size=16, num_layers=2), tiny_config(num_layers=4)  # k = 2
  aux = perturb(lad.init_gates(jax.random.key(0), s_cfg, t_cfg), 2)
  assert aux["proj"]["kernel"].shape == (16, 32)  # widths differ: a learned projection
  rng = np.random.default_rng(3)
  s_h = [rng.standard_normal((B, S, 16)) for _ in range(3)]  # embeddings + 2 layers
  t_h = [rng.standard_normal((B, S, 32)) for _ in range(5)]  # embeddings + 4 layers
  weights = (1.0, 0.5, 2.0)
  got = lad.lad_loss(term_inputs([jnp.asarray(x, jnp.float32) for x in s_h],
                                 [jnp.asarray(x, jnp.float32) for x in t_h], aux, s_cfg, t_cfg, weights))
  aggs = np_aggregate(t_h[1:], aux["gates"], False)
  w = MASK * np.asarray(weights)[:, None]  # real tokens, example weights
  per_layer = []
  for j in (1, 2):  # student layer j <-> aggregate at teacher depth 2j
    proj = s_h[j] @ np.asarray(aux["proj"]["kernel"], np.float64) + np.asarray(aux["proj"]["bias"])
    per_token = ((proj - aggs[2 * j - 1]) ** 2).mean(-1)
    per_layer.append((per_token * w).sum() / w.sum())
  np.testing.assert_allclose(got, np.mean(per_layer), rtol=1e-4)
  # Padding content does not matter: rewrite every padded position of both models.
  pad = (MASK == 0)[:, :, None]
  s_pad = [jnp.asarray(np.where(pad, 99.0, x), jnp.float32) for x in s_h]
  t_pad = [jnp.asarray(np.where(pad, -7.0, x), jnp.float32) for x in t_h]
  np.testing.assert_allclose(lad.lad_loss(term_inputs(s_pad, t_pad, aux, s_cfg, t_cfg, weights)),
                             got, rtol=1e-6)


def test_depth_rule():
  assert lad.layer_stride(2, 5) == 2  # floor, as the thesis code: depths 2 and 4
  with pytest.raises(ValueError, match="3-layer student cannot be matched to a 2-layer teacher"):
    lad.layer_stride(3, 2)


def random_params(cfg, seed):
  rng = np.random.default_rng(seed)
  abstract = params_of(nnx.eval_shape(lambda: BertModel(cfg, rngs=nnx.Rngs(0))))
  return jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.asarray((p[-1].key == "scale") + 0.05 * rng.standard_normal(x.shape), x.dtype),
      abstract)


def token_batch():
  ids = np.where(MASK == 1, np.random.default_rng(0).integers(1, 128, (B, S)), 0)
  return {"input_ids": jnp.asarray(ids, jnp.int32), "attention_mask": jnp.asarray(MASK),
          "token_type_ids": jnp.zeros((B, S), jnp.int32), "labels": jnp.asarray([0, 1, 1]),
          "example_weight": jnp.ones((B,), jnp.float32)}


def test_gradients_reach_gates_and_student_only():
  s_cfg, t_cfg = tiny_config(num_layers=2), tiny_config(num_layers=4)
  s_params, t_params = random_params(s_cfg, 1), random_params(t_cfg, 2)
  config = lad_config()
  config.losses.hard_ce, config.losses.kd = 0.5, 0.5  # as configs/lad.py mixes them
  config.train.batch_size, config.optim.lr, config.optim.aux_lr = B, 1e-3, 1e-2
  method, step, init, _ = build_step(config, s_cfg, t_cfg, total_steps=10)
  aux = method.init_params(config.seed)
  # (1) Gradients of the lad term w.r.t. teacher + student + gates, the teacher's outputs
  # passed through stop_gradient as the train step passes them.
  sg, tg, batch = graphdef_of(s_cfg), graphdef_of(t_cfg), token_batch()

  def lad_only(tree):
    args = (batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    s_out = nnx.merge(sg, tree["student"])(*args, collect=TERMS["lad"].student)
    t_out = jax.lax.stop_gradient(nnx.merge(tg, tree["teacher"])(*args, collect=TERMS["lad"].teacher))
    return lad.lad_loss(Inputs(s_out, t_out, batch, tree["aux"], s_cfg, t_cfg))

  g = jax.jit(jax.grad(lad_only))({"teacher": t_params, "student": s_params, "aux": aux["lad"]})
  assert all(float(jnp.abs(x).max()) == 0.0 for x in jax.tree.leaves(g["teacher"]))
  assert all(float(jnp.abs(x).max()) > 0.0 for x in jax.tree.leaves(g["aux"]))
  assert all(float(jnp.abs(x).max()) > 0.0 for x in jax.tree.leaves(g["student"]["layers"]))
  # (2) The real train step: teacher untouched; every gate and student param moves.
  state = init(s_params, aux)
  before = jax.tree.map(np.asarray, (t_params, state.trainable))
  for _ in range(3):  # the first step has lr 0 (warmup starts at 0)
    state, metrics = step(state, t_params, batch)
  assert np.isfinite(float(metrics["loss/lad"]))
  for a, b in zip(jax.tree.leaves(before[0]), jax.tree.leaves(t_params), strict=True):
    np.testing.assert_array_equal(a, b)
  for a, b in zip(jax.tree.leaves(before[1]), jax.tree.leaves(state.trainable), strict=True):
    assert not np.array_equal(a, b)


def test_padded_average_matches_numpy():
  """average_over="padded": every position of the padded batch counts, as in the thesis."""
  s_cfg, t_cfg = tiny_config(num_layers=2), tiny_config(num_layers=4)  # k = 2, same widths
  aux = perturb(lad.init_gates(jax.random.key(0), s_cfg, t_cfg), 4)
  rng = np.random.default_rng(5)
  s_h = [rng.standard_normal((B, S, 32)) for _ in range(3)]
  t_h = [rng.standard_normal((B, S, 32)) for _ in range(5)]
  weights = (1.0, 0.5, 2.0)
  x = term_inputs([jnp.asarray(v, jnp.float32) for v in s_h], [jnp.asarray(v, jnp.float32) for v in t_h],
                  aux, s_cfg, t_cfg, weights)
  got = lad.lad_loss(x, average_over="padded")
  aggs = np_aggregate(t_h[1:], aux["gates"], False)
  w = np.ones((B, S)) * np.asarray(weights)[:, None]  # padding included, example weights kept
  want = np.mean([(((s_h[j] - aggs[2 * j - 1]) ** 2).mean(-1) * w).sum() / w.sum() for j in (1, 2)])
  np.testing.assert_allclose(got, want, rtol=1e-4)
  assert not np.isclose(float(got), float(lad.lad_loss(x)), rtol=1e-3)  # tokens differs here
  pad = (MASK == 0)[:, :, None]  # and now the padded positions' content matters
  s_pad = [jnp.asarray(np.where(pad, 9.0, v), jnp.float32) for v in s_h]
  moved = lad.lad_loss(term_inputs(s_pad, x.teacher.hidden_states, aux, s_cfg, t_cfg, weights),
                       average_over="padded")
  assert float(moved) > float(got) + 1.0


@pytest.mark.parametrize("learnable", [False, True])
def test_gate_one_is_layer_norm_of_each_layer(learnable):
  """gate="one": a_1 = h_1, a_i = LN(h_i); no gate kernels, and no aux at all without an affine."""
  s_cfg, t_cfg = tiny_config(num_layers=2), tiny_config(num_layers=4)
  aux = lad.init_gates(jax.random.key(0), s_cfg, t_cfg, learnable_norm=learnable, gate="one")
  if not learnable:
    assert aux == {}
  else:
    assert sorted(aux["gates"]) == ["2", "3", "4"]
    assert all(set(g) == {"scale", "offset"} for g in aux["gates"].values())
    aux = perturb(aux, 6)
  gates = aux.get("gates", {})
  hs = [np.random.default_rng(10 + i).standard_normal((B, S, 32)) for i in range(4)]
  got = lad.aggregate([jnp.asarray(h, jnp.float32) for h in hs], gates, gate="one")
  np.testing.assert_allclose(got[0], hs[0], rtol=1e-6)
  for i in range(1, 4):
    mu = hs[i].mean(-1, keepdims=True)
    want = (hs[i] - mu) / np.sqrt(((hs[i] - mu) ** 2).mean(-1, keepdims=True) + 1e-5)
    if learnable:
      g = {k: np.asarray(v, np.float64) for k, v in gates[str(i + 1)].items()}
      want = want * g["scale"] + g["offset"]
    np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-4)


def test_bad_choices_are_one_line_config_errors():
  c = load_config("configs/lad.py:tiny")
  apply_overrides(c, [("lad.average_over", "padded"), ("lad.gate", "one")])
  term = TERMS["lad"].from_config(c)
  assert (term.average_over, term.gate) == ("padded", "one")
  for key, bad, allowed in (("average_over", "pad", "tokens, padded"), ("gate", "fixed", "learned, one")):
    c = load_config("configs/lad.py:tiny")
    apply_overrides(c, [(f"lad.{key}", bad)])
    with pytest.raises(ConfigError, match=f"lad.{key}='{bad}'; use one of {allowed}") as e:
      TERMS["lad"].from_config(c)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("gate,average_over", [("learned", "tokens"), ("one", "padded")])
def test_end_to_end_tiny(tmp_path, gate, average_over):
  from jaxdistill.testing import tiny_checkpoint
  from jaxdistill.pipeline import run as train_and_evaluate
  teacher = tiny_checkpoint(tmp_path / "teacher", num_layers=4, label_names=("rotten", "fresh"),
                            seed=1)
  student = tiny_checkpoint(tmp_path / "student", num_layers=2, seed=2)
  c = load_config("configs/lad.py:tiny")
  c.teacher.source, c.teacher.finetune = str(teacher), False
  c.student.source, c.student.init, c.student.layers = str(student), "pretrained", ()
  c.lad.gate, c.lad.average_over = gate, average_over
  c.report.compression = False
  c.cache_dir = str(tmp_path / "cache")
  out = train_and_evaluate(c, tmp_path / "run")
  # g = 1 without a learnable affine has no parameters: no aux entry at all.
  assert int(out["state"].step) == 6
  assert set(out["state"].trainable["aux"]) == ({"lad"} if gate == "learned" else set())
  assert np.isfinite(float(out["student"]["test"]["accuracy"]))
  model, fresh = load_pretrained(str(tmp_path / "run" / "export"))
  assert model.config.num_layers == 2 and not fresh
