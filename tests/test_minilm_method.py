"""MiniLM v1 / MiniLMv2 loss terms (jaxdistill/methods/minilm.py) and their configs.

The terms against NumPy references written here from the papers' formulas (softmax over the
real keys, KL(teacher || student) per head and real query, averaged over heads, then over
the real queries weighted by example weight), the layer choice (student last, teacher
minilm.teacher_layer), the head-count and relation-head errors, gradients reaching the
student's attention and nothing the loss cannot see, and tiny end-to-end runs of the three
configs' stages, resumed by a second invocation.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdistill.config_lib import base_config, load_config
from jaxdistill.methods import minilm
from jaxdistill.models import BertModel, BertOutput, Collect, count_params, tiny_config
from jaxdistill.models.hub import load_pretrained, params_of
from jaxdistill import methods
from jaxdistill.methods import TERMS, Inputs, StepOutputs
from jaxdistill.methods.base import RunInfo, graphdef_of
from jaxdistill.pipeline import run as train_and_evaluate
from method_helpers import build_step

B, S = 3, 6
MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]], np.int32)
WEIGHTS = np.array([1.0, 0.5, 2.0])


# ---- NumPy references -----------------------------------------------------------------------
def np_log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_kl_loss(s_logits, t_logits, mask=MASK, weights=WEIGHTS):
  """[B, H, S, S] relation logits -> the weighted mean over real queries of the head-mean
  KL(teacher row || student row), both rows restricted to the real keys."""
  total = norm = 0.0
  for b in range(mask.shape[0]):
    real = np.flatnonzero(mask[b])
    for q in real:
      kls = []
      for h in range(s_logits.shape[1]):
        lt = np_log_softmax(np.asarray(t_logits[b, h, q, real], np.float64))
        ls = np_log_softmax(np.asarray(s_logits[b, h, q, real], np.float64))
        kls.append(np.sum(np.exp(lt) * (lt - ls)))
      total += weights[b] * np.mean(kls)
      norm += weights[b]
  return total / norm


def np_relation_logits(x):
  """[B, H, S, d] -> X X^T / sqrt(d)."""
  x = np.asarray(x, np.float64)
  return np.einsum("bhqd,bhkd->bhqk", x, x) / np.sqrt(x.shape[-1])


def np_relation_heads(x, r):
  """MiniLMv2: [B, N, S, D] -> heads concatenated [B, S, N*D] -> [B, R, S, N*D/R]."""
  b, n, s, d = x.shape
  merged = np.concatenate([x[:, i] for i in range(n)], axis=-1)  # head i at columns i*D..
  w = n * d // r
  return np.stack([merged[:, :, j * w:(j + 1) * w] for j in range(r)], axis=1)


def rand(rng, *shape):
  return rng.standard_normal(shape).astype(np.float32)


def term_value(name, s_out, t_out, **minilm_cfg):
  c = base_config()
  for k, v in minilm_cfg.items():
    c.minilm[k] = v
  batch = {"attention_mask": jnp.asarray(MASK), "example_weight": jnp.asarray(WEIGHTS, jnp.float32)}
  x = Inputs(s_out, t_out, batch, {}, None, None)
  return float(TERMS[name].from_config(c)(x))


def outputs(**per_layer):
  return BertOutput(last_hidden=jnp.zeros(()), **{k: tuple(jnp.asarray(a) for a in v)
                                                  for k, v in per_layer.items()})


# ---- The terms against the references -------------------------------------------------------
def test_attention_term_is_the_last_layers_kl():
  rng = np.random.default_rng(0)
  s_scores = [rand(rng, B, 4, S, S) for _ in range(2)]  # a 2-layer student
  t_scores = [2.0 * rand(rng, B, 4, S, S) for _ in range(3)]  # a 3-layer teacher
  # Padded keys as the model writes them (finfo.min); their values must not matter.
  pad = MASK[:, None, None, :] == 0
  s_scores = [np.where(pad, np.finfo(np.float32).min, x) for x in s_scores]
  s_out, t_out = outputs(attention_scores=s_scores), outputs(attention_scores=t_scores)
  want = np_kl_loss(s_scores[-1], t_scores[-1])
  np.testing.assert_allclose(term_value("minilm_attention", s_out, t_out), want, rtol=1e-5)
  # teacher_layer 3 == -1 (the last); 2 == -2 picks the teacher's middle layer.
  np.testing.assert_allclose(term_value("minilm_attention", s_out, t_out, teacher_layer=3), want, rtol=1e-5)
  mid = np_kl_loss(s_scores[-1], t_scores[1])
  assert abs(mid - want) > 1e-2
  for layer in (2, -2):
    np.testing.assert_allclose(term_value("minilm_attention", s_out, t_out, teacher_layer=layer),
                               mid, rtol=1e-5)


def test_value_term_is_the_value_relation_kl():
  rng = np.random.default_rng(1)
  s_v = [rand(rng, B, 4, S, 4) for _ in range(2)]  # 4 heads of 4 (width 16)
  t_v = [rand(rng, B, 4, S, 8) for _ in range(2)]  # 4 heads of 8 (width 32): v1 allows it
  got = term_value("minilm_value", outputs(values=s_v), outputs(values=t_v))
  want = np_kl_loss(np_relation_logits(s_v[-1]), np_relation_logits(t_v[-1]))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_v2_term_relates_differing_heads_and_widths():
  rng = np.random.default_rng(2)
  # Student: 2 layers of 2 heads x 8 (width 16); teacher: 3 layers of 4 heads x 8 (width 32).
  s = {k: [rand(rng, B, 2, S, 8) for _ in range(2)] for k in ("queries", "keys", "values")}
  t = {k: [rand(rng, B, 4, S, 8) for _ in range(3)] for k in ("queries", "keys", "values")}
  r = 4  # relation heads of 4 (student) and 8 (teacher)

  def want(t_layer):
    return sum(np_kl_loss(np_relation_logits(np_relation_heads(s[k][-1], r)),
                          np_relation_logits(np_relation_heads(t[k][t_layer], r)))
               for k in ("queries", "keys", "values"))

  s_out, t_out = outputs(**s), outputs(**t)
  np.testing.assert_allclose(term_value("minilm_v2", s_out, t_out, relation_heads=r), want(-1), rtol=1e-5)
  np.testing.assert_allclose(term_value("minilm_v2", s_out, t_out, relation_heads=r, teacher_layer=1),
                             want(0), rtol=1e-5)
  # Relation heads cut across attention heads: R = 2 gives another value than R = 4.
  assert abs(term_value("minilm_v2", s_out, t_out, relation_heads=2) - want(-1)) > 1e-3


def test_v1_with_different_head_counts_points_to_v2():
  rng = np.random.default_rng(3)
  s_out = outputs(attention_scores=[rand(rng, B, 2, S, S)], values=[rand(rng, B, 2, S, 8)])
  t_out = outputs(attention_scores=[rand(rng, B, 4, S, S)], values=[rand(rng, B, 4, S, 8)])
  for name in ("minilm_attention", "minilm_value"):
    with pytest.raises(ValueError) as e:
      term_value(name, s_out, t_out)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg == (f"losses.{name}: MiniLM v1 needs equal head counts (teacher 4 vs student 2); "
                   "use losses.minilm_v2 (MiniLMv2 relation heads, minilm.relation_heads) instead")


def test_config_errors():
  rng = np.random.default_rng(4)
  qkv = lambda n, d: {k: [rand(rng, B, n, S, d)] for k in ("queries", "keys", "values")}
  s_out, t_out = outputs(**qkv(2, 8)), outputs(**qkv(4, 8))  # widths 16 and 32
  with pytest.raises(ValueError, match=r"minilm.relation_heads=3 must divide both widths \(teacher "
                     r"32, student 16\); use a common divisor, e.g. 16"):
    term_value("minilm_v2", s_out, t_out, relation_heads=3)
  with pytest.raises(ValueError, match=r"minilm.teacher_layer=2 is out of range for a 1-layer "
                     r"teacher; use 1..1 or -1..-1"):
    term_value("minilm_v2", s_out, t_out, relation_heads=4, teacher_layer=2)
  for bad in (0, -2):
    with pytest.raises(ValueError, match="out of range"):
      minilm.teacher_layer_index(bad, 1)


# ---- Real forward passes --------------------------------------------------------------------
def random_params(cfg, seed):
  rng = np.random.default_rng(seed)
  abstract = params_of(nnx.eval_shape(lambda: BertModel(cfg, rngs=nnx.Rngs(0))))
  return jax.tree_util.tree_map_with_path(
      lambda p, x: jnp.asarray((p[-1].key == "scale") + 0.3 * rng.standard_normal(x.shape), x.dtype),
      abstract)


def token_batch():
  ids = np.where(MASK == 1, np.random.default_rng(0).integers(1, 128, (B, S)), 0)
  return {"input_ids": jnp.asarray(ids, jnp.int32), "attention_mask": jnp.asarray(MASK),
          "token_type_ids": jnp.zeros((B, S), jnp.int32), "labels": jnp.asarray([0, 1, 1]),
          "example_weight": jnp.asarray(WEIGHTS, jnp.float32)}


def forward(cfg, params, batch, collect=Collect.everything()):
  return nnx.merge(graphdef_of(cfg), params)(batch["input_ids"], batch["attention_mask"],
                                             batch["token_type_ids"], collect=collect)


def jit_forward(cfg, params, batch):
  return jax.jit(lambda p, b: forward(cfg, p, b))(params, batch)


def test_attention_term_on_a_real_forward_equals_kl_of_the_probabilities():
  """The term reads pre-softmax scores; the reference reads the model's softmaxed probabilities."""
  s_cfg, t_cfg = tiny_config(num_layers=2), tiny_config(num_layers=3)
  batch = token_batch()
  s_out = jit_forward(s_cfg, random_params(s_cfg, 1), batch)
  t_out = jit_forward(t_cfg, random_params(t_cfg, 2), batch)
  log = lambda p: np.log(np.maximum(np.asarray(p, np.float64), 1e-300))
  want = np_kl_loss(log(s_out.attention_probs[-1]), log(t_out.attention_probs[-1]))
  np.testing.assert_allclose(term_value("minilm_attention", s_out, t_out), want, rtol=1e-4)


def pair_config(**weights):
  c = base_config()
  c.losses.hard_ce = 0.0
  for k, w in weights.items():
    c.losses[k] = w
  c.minilm.relation_heads = 4
  c.train.batch_size, c.optim.lr = B, 1e-3
  return c


@pytest.mark.parametrize("weights,s_cfg", [
    (dict(minilm_attention=1.0, minilm_value=1.0), tiny_config(num_layers=2)),
    (dict(minilm_v2=1.0), tiny_config(num_layers=2, hidden_size=16, num_heads=2, intermediate_size=32)),
], ids=["v1", "v2_narrow"])
def test_gradients_reach_the_students_attention_only(weights, s_cfg):
  """Through both models, with the teacher's outputs stop_gradient'ed as train/step.py does."""
  t_cfg = tiny_config(num_layers=3)
  config = pair_config(**weights)
  s_params, t_params = random_params(s_cfg, 1), random_params(t_cfg, 2)
  batch = token_batch()
  method = methods.get(config)
  method.setup(RunInfo(s_cfg, (t_cfg,), 10))
  s_collect, t_collect = method.collect()

  def loss(student, teacher):
    t_out = jax.lax.stop_gradient(forward(t_cfg, teacher, batch, t_collect))  # as the step does
    s_out = forward(s_cfg, student, batch, s_collect)
    trainable = {"student": student, "aux": {}}
    return method.loss(StepOutputs(s_out, (t_out,), batch, trainable, (teacher,), jnp.int32(0)))[0]

  g_s, g_t = jax.jit(jax.grad(loss, argnums=(0, 1)))(s_params, t_params)
  amax = lambda tree: max(float(jnp.abs(x).max()) for x in jax.tree.leaves(tree))
  assert amax(g_t) == 0.0  # the teacher is a constant target
  last = g_s["layers"][s_cfg.num_layers - 1]
  for part in ("query", "key") + (("value",) if "minilm_value" in weights or "minilm_v2" in weights else ()):
    assert amax(last["attention"][part]) > 0.0, part
  assert amax(g_s["embeddings"]) > 0.0 and amax(g_s["layers"][0]) > 0.0
  # The losses read the last layer's Q/K/V only: nothing after them gets a gradient.
  for unseen in (last["intermediate"], last["output"], last["norm"], last["attention"]["out_kernel"],
                 g_s["pooler"], g_s["classifier"]):
    assert amax(unseen) == 0.0


def test_v1_head_error_stops_the_train_step():
  s_cfg = tiny_config(hidden_size=16, num_heads=2, intermediate_size=32)
  t_cfg = tiny_config()
  config = pair_config(minilm_attention=1.0, minilm_value=1.0)
  _, step, init, _ = build_step(config, s_cfg, t_cfg, total_steps=10)
  state = init(random_params(s_cfg, 1), {})
  with pytest.raises(ValueError, match=r"MiniLM v1 needs equal head counts \(teacher 4 vs student 2\); "
                     "use losses.minilm_v2"):
    step(state, random_params(t_cfg, 2), token_batch())


# ---- The configs' stages, end to end --------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
  from jaxdistill.testing import tiny_checkpoint
  root = tmp_path_factory.mktemp("minilm_models")
  teacher = tiny_checkpoint(root / "teacher", num_layers=4, label_names=("rotten", "fresh"), seed=1)
  student = tiny_checkpoint(root / "student", num_layers=4, seed=2)  # a "pretrained" source
  return {"teacher": str(teacher), "student": str(student), "cache": str(root / "cache")}


def run_twice(c, workdir):
  """Runs the config's stages twice; returns the stage names each invocation trained."""
  from unittest import mock

  from jaxdistill import pipeline
  trained = [[], []]
  for i in range(2):
    def train_fn(stage_config, stage_dir, i=i, real=pipeline.train_stage, **kw):
      trained[i].append(stage_config.name.rsplit("_", 1)[1])
      return real(stage_config, stage_dir, **kw)
    with mock.patch.object(pipeline, "train_stage", train_fn):
      out = pipeline.run(c, workdir)
  return trained, out


def tiny_run(name, tiny_models, **top):
  c = load_config(f"configs/{name}.py:tiny")
  c.teacher.source, c.teacher.finetune = tiny_models["teacher"], False
  c.student.source = tiny_models["student"]
  c.cache_dir = tiny_models["cache"]
  for key, value in top.items():
    section, field = key.split("__")
    c[section][field] = value
  return c


def check_export(workdir, *, layers, hidden, heads):
  model, fresh = load_pretrained(str(workdir / "export"))
  assert (model.config.num_layers, model.config.hidden_size, model.config.num_heads) == (layers, hidden, heads)
  assert not fresh


@pytest.mark.heavy
def test_minilm_v1_tiny_end_to_end_resumes(tiny_models, tmp_path):
  c = tiny_run("minilm", tiny_models, student__layers=(0, 2), report__compression=False)
  trained, out = run_twice(c, tmp_path)
  assert trained == [["distil", "finetune"], ["finetune"]]  # the done stage is skipped
  distil = json.loads((tmp_path / "distil" / "config.json").read_text())
  assert distil["losses"]["minilm_attention"] == 1.0 and distil["losses"]["hard_ce"] == 0.0
  final = json.loads((tmp_path / "config.json").read_text())
  assert final["losses"]["hard_ce"] == 1.0 and final["losses"]["minilm_value"] == 0.0
  assert final["student"]["source"] == str(tmp_path / "distil" / "export")
  assert int(out["state"].step) == 6  # resumed at its end: no step retrained
  check_export(tmp_path, layers=2, hidden=32, heads=4)


@pytest.mark.heavy
def test_minilm_v2_tiny_end_to_end_with_a_narrower_student(tiny_models, tmp_path):
  c = tiny_run("minilm_v2", tiny_models, student__num_layers=2, student__hidden_size=16,
               student__num_heads=2, student__intermediate_size=32, minilm__relation_heads=4,
               report__compression=False)
  train_and_evaluate(c, tmp_path)
  check_export(tmp_path / "distil", layers=2, hidden=16, heads=2)  # width 16 vs 32, 2 heads vs 4
  check_export(tmp_path, layers=2, hidden=16, heads=2)
  final = json.loads((tmp_path / "export" / "DONE").read_text())
  assert final["method"] == "minilm_v2" and 0.0 <= final["student"]["test"]["accuracy"] <= 1.0


@pytest.mark.heavy
def test_minilm_ta_tiny_end_to_end(tiny_models, tmp_path):
  # Assistant: the teacher's depth (4) at the student's width (16); student: its layers 0, 2.
  c = tiny_run("minilm_ta", tiny_models, student__num_layers=4, student__hidden_size=16,
               student__num_heads=2, student__intermediate_size=32, student__layers=(0, 2),
               minilm__relation_heads=4)
  train_and_evaluate(c, tmp_path)
  check_export(tmp_path / "assistant", layers=4, hidden=16, heads=2)
  check_export(tmp_path / "student", layers=2, hidden=16, heads=2)
  check_export(tmp_path, layers=2, hidden=16, heads=2)
  student = json.loads((tmp_path / "student" / "config.json").read_text())
  assistant = str(tmp_path / "assistant" / "export")
  assert student["teacher"]["source"] == assistant and not student["teacher"]["finetune"]
  assert (student["student"]["source"], student["student"]["init"]) == (assistant, "layers")
  report = json.loads((tmp_path / "report.json").read_text())  # against the original teacher
  teacher, _ = load_pretrained(tiny_models["teacher"])
  assert report["teacher_params"] == count_params(params_of(teacher))
