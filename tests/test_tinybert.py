"""TinyBERT's loss terms on tiny models' real outputs against NumPy references written here
(the paper's formulas, student layer m paired with teacher layer m*L/M), the projections W_h
and W_e (present only when widths differ, and trained), the one-line errors, and the
4-stage config end to end with every stage skipped or resumed on a rerun."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdistill.config_lib import base_config, load_config
from jaxdistill.methods import tinybert
from jaxdistill.models import BertModel, Collect, tiny_config
from jaxdistill.models.hub import load_pretrained, params_of
from jaxdistill import methods
from jaxdistill.methods import TERMS, Inputs
from jaxdistill.methods.base import RunInfo

B, S = 3, 7
MASK = np.array([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5], np.int32)
T_CFG = tiny_config(num_layers=4)                                      # width 32, 4 heads
S_CFG = tiny_config(num_layers=2, hidden_size=16, intermediate_size=32)  # width 16, 4 heads
ALL = Collect(hidden_states=True, attention_scores=True)


def config(**losses):
  c = base_config()
  c.losses.hard_ce = 0.0
  for name, weight in losses.items():
    c.losses[name] = weight
  return c


def init_aux(c, s_cfg, t_cfg) -> dict:
  """The method's own parameters (its terms' projections), as the loop initialises them."""
  m = methods.get(c)
  m.setup(RunInfo(s_cfg, (t_cfg,), 10))
  out = m.init_params(c.seed)
  return {name: out.get(name, {}) for name in m.terms}


def term(name, c):
  return TERMS[name].from_config(c)


def forward(cfg, seed, mask=MASK):
  model = BertModel(cfg, rngs=nnx.Rngs(seed))
  graph, params = nnx.split(model)
  ids = np.random.default_rng(seed).integers(1, cfg.vocab_size, (B, S)).astype(np.int32)
  run = jax.jit(lambda p, i, m: nnx.merge(graph, p)(i, m, collect=ALL))
  return graph, params, ids, run(params, ids, mask)


@pytest.fixture(scope="module")
def outputs():
  return forward(S_CFG, 1), forward(T_CFG, 2)


def inputs(s_out, t_out, aux, c, mask=MASK, s_cfg=S_CFG, t_cfg=T_CFG):
  batch = {"attention_mask": jnp.asarray(mask), "example_weight": jnp.ones((B,), jnp.float32)}
  return Inputs(s_out, t_out, batch, aux, s_cfg, t_cfg)


def np_hidden_mse(h_s, h_t, w, b, mask):
  """mean over real tokens of mean_h (h_s W + b - h_t)^2."""
  h_s = np.asarray(h_s, np.float64)
  proj = h_s @ np.asarray(w, np.float64) + np.asarray(b, np.float64) if w is not None else h_s
  per_token = ((proj - np.asarray(h_t, np.float64)) ** 2).mean(-1)
  return (per_token * mask).sum() / mask.sum()


def np_attention_mse(a_s, a_t, mask):
  """Per real query: mean over heads and real keys of (A_s - A_t)^2 after zeroing padded
  entries (and <= -100, as TinyBERT's code); then the mean over real queries."""
  a_s, a_t = np.asarray(a_s, np.float64), np.asarray(a_t, np.float64)
  pair = (mask[:, None, :, None] * mask[:, None, None, :]).astype(bool)
  a_s = np.where(pair & (a_s > -100), a_s, 0.0)
  a_t = np.where(pair & (a_t > -100), a_t, 0.0)
  total, count = 0.0, 0
  for b in range(a_s.shape[0]):
    n = int(mask[b].sum())
    for q in range(n):
      total += ((a_s[b, :, q, :n] - a_t[b, :, q, :n]) ** 2).mean()
      count += 1
  return total / count


def test_uniform_layer_map_is_m_times_l_over_m():
  c = base_config()
  assert tinybert.layer_pairs(c.tinybert.layer_map, c.tinybert.pairs, tiny_config(num_layers=4), tiny_config(num_layers=6)) == \
      [(1, 1), (2, 3), (3, 4), (4, 6)]  # floor(m * 6 / 4)
  assert tinybert.layer_pairs(c.tinybert.layer_map, c.tinybert.pairs, tiny_config(num_layers=2), tiny_config(num_layers=4)) == [(1, 2), (2, 4)]
  c.tinybert.layer_map, c.tinybert.pairs = "explicit", ((1, 1), (2, 2))
  assert tinybert.layer_pairs(c.tinybert.layer_map, c.tinybert.pairs, tiny_config(num_layers=2), tiny_config(num_layers=4)) == [(1, 1), (2, 2)]


def test_projections_only_when_widths_differ():
  c = config(tinybert_embedding=1.0, tinybert_hidden=1.0, tinybert_attention=1.0)
  aux = init_aux(c, S_CFG, T_CFG)
  for name in ("tinybert_embedding", "tinybert_hidden"):
    assert aux[name]["kernel"].shape == (16, 32) and aux[name]["bias"].shape == (32,)
  assert not np.array_equal(aux["tinybert_embedding"]["kernel"], aux["tinybert_hidden"]["kernel"])
  assert aux["tinybert_attention"] == {}
  same = init_aux(c, tiny_config(num_layers=2), T_CFG)
  assert same["tinybert_embedding"] == {} and same["tinybert_hidden"] == {}


def test_embedding_and_hidden_terms_match_numpy(outputs):
  (_, _, _, s_out), (_, _, _, t_out) = outputs
  # A random BERT's layers are all close to its embeddings; scaling teacher layer j by j + 1
  # makes a wrongly paired layer show.
  t_out = t_out.replace(hidden_states=tuple(h * (j + 1) for j, h in enumerate(t_out.hidden_states)))
  c = config(tinybert_embedding=1.0, tinybert_hidden=1.0)
  aux = init_aux(c, S_CFG, T_CFG)
  w_e, w_h = aux["tinybert_embedding"], aux["tinybert_hidden"]
  got_e = term("tinybert_embedding", c)(inputs(s_out, t_out, w_e, c))
  want_e = np_hidden_mse(s_out.hidden_states[0], t_out.hidden_states[0], w_e["kernel"], w_e["bias"], MASK)
  np.testing.assert_allclose(got_e, want_e, rtol=1e-5)
  got_h = term("tinybert_hidden", c)(inputs(s_out, t_out, w_h, c))
  M, L = S_CFG.num_layers, T_CFG.num_layers
  want_h = sum(np_hidden_mse(s_out.hidden_states[m], t_out.hidden_states[m * L // M],
                             w_h["kernel"], w_h["bias"], MASK) for m in range(1, M + 1))
  np.testing.assert_allclose(got_h, want_h, rtol=1e-5)
  wrong = sum(np_hidden_mse(s_out.hidden_states[m], t_out.hidden_states[m], w_h["kernel"],
                            w_h["bias"], MASK) for m in range(1, M + 1))  # layer m <- m
  assert abs(wrong - want_h) > 0.1 * want_h


def test_attention_term_matches_numpy_on_pre_softmax_scores(outputs):
  (_, _, _, s_out), (_, _, _, t_out) = outputs
  # Teacher layer j's scores scaled by j (masked entries stay at the mask value), so that
  # pairing the wrong layers would show.
  t_out = t_out.replace(attention_scores=tuple(
      jnp.where(a > -1e30, a * j, a) for j, a in enumerate(t_out.attention_scores, 1)))
  c = config(tinybert_attention=1.0)
  got = term("tinybert_attention", c)(inputs(s_out, t_out, {}, c))
  M, L = S_CFG.num_layers, T_CFG.num_layers
  want = sum(np_attention_mse(s_out.attention_scores[m - 1], t_out.attention_scores[m * L // M - 1], MASK)
             for m in range(1, M + 1))
  np.testing.assert_allclose(got, want, rtol=1e-5)
  wrong = sum(np_attention_mse(s_out.attention_scores[m - 1], t_out.attention_scores[m - 1], MASK)
              for m in range(1, M + 1))
  assert abs(wrong - want) > 0.1 * want
  # Without padding it is the TinyBERT code's MSE over every (head, query, key) entry.
  full = np.ones((B, S), np.int32)
  (_, _, _, s_full), (_, _, _, t_full) = forward(S_CFG, 1, full), forward(T_CFG, 2, full)
  got = term("tinybert_attention", c)(inputs(s_full, t_full, {}, c, mask=full))
  want = sum(np.mean((np.asarray(s_full.attention_scores[m - 1], np.float64)
                      - np.asarray(t_full.attention_scores[m * L // M - 1], np.float64)) ** 2)
             for m in range(1, M + 1))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def test_prediction_term_is_soft_cross_entropy_at_the_temperature(outputs):
  (_, _, _, s_out), (_, _, _, t_out) = outputs
  c = config(tinybert_prediction=1.0)
  c.tinybert.temperature = 2.0
  got = term("tinybert_prediction", c)(inputs(s_out, t_out, {}, c))
  z_s, z_t = np.asarray(s_out.logits, np.float64) / 2, np.asarray(t_out.logits, np.float64) / 2
  p_t = np.exp(z_t - z_t.max(-1, keepdims=True))
  p_t /= p_t.sum(-1, keepdims=True)
  log_q = z_s - z_s.max(-1, keepdims=True)
  log_q -= np.log(np.exp(log_q).sum(-1, keepdims=True))
  np.testing.assert_allclose(got, (-(p_t * log_q).sum(-1)).mean(), rtol=1e-5)  # no T^2


def test_projections_and_student_get_gradients(outputs):
  (s_graph, s_params, ids, _), (_, _, _, t_out) = outputs
  c = config(tinybert_embedding=1.0, tinybert_hidden=1.0, tinybert_attention=1.0)
  aux = init_aux(c, S_CFG, T_CFG)

  def loss(params, aux):
    s_out = nnx.merge(s_graph, params)(ids, MASK, collect=ALL)
    return sum(term(n, c)(inputs(s_out, t_out, aux[n], c)) for n in aux)

  g_params, g_aux = jax.jit(jax.grad(loss, argnums=(0, 1)))(s_params, aux)
  for name in ("tinybert_embedding", "tinybert_hidden"):
    assert float(jnp.abs(g_aux[name]["kernel"]).max()) > 0 and float(jnp.abs(g_aux[name]["bias"]).max()) > 0
  flat = params_of(nnx.merge(s_graph, g_params))
  assert float(jnp.abs(flat["embeddings"]["word"]["embedding"]).max()) > 0
  assert float(jnp.abs(flat["layers"][1]["attention"]["query"]["kernel"]).max()) > 0


def test_bad_setups_are_one_line_errors(outputs):
  c = config(tinybert_attention=1.0)
  with pytest.raises(ValueError,
                     match=r"equal head counts \(teacher 4, student 2\); set student.num_heads=4"):
    init_aux(c, tiny_config(num_layers=2, num_heads=2), T_CFG)
  c.tinybert.layer_map = "skip"
  with pytest.raises(ValueError, match="pairs no layers"):  # PKD-skip leaves a 1-layer student nothing
    init_aux(c, tiny_config(num_layers=1), T_CFG)
  (_, _, _, s_out), (_, _, _, t_out) = outputs
  with pytest.raises(ValueError, match="regression; use losses.logit_mse"):
    term("tinybert_prediction", c)(inputs(s_out, t_out, {}, config(), s_cfg=S_CFG.replace(
        problem_type="regression", num_labels=1)))


def _flat(params):
  return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}


def _swap(value, old, new):
  return new if value == old else value


@pytest.mark.heavy
def test_tiny_config_runs_all_four_stages_and_a_rerun_trains_nothing(tmp_path):
  """configs/tinybert.py:tiny with tiny checkpoints in place of MiniLM (a 4-layer width-48
  teacher with 12 heads, as the config's student needs), so it runs in well under a minute."""
  from jaxdistill.data.augment_tinybert import OUTPUT
  from jaxdistill.testing import tiny_checkpoint
  from jaxdistill.pipeline import run as train_and_evaluate
  src = str(tiny_checkpoint(tmp_path / "minilm", num_layers=4, hidden_size=48, num_heads=12,
                            intermediate_size=96, label_names=("rotten", "fresh"), seed=1))
  c = load_config("configs/tinybert.py:tiny")
  c.teacher.source = c.student.source = src
  c.teacher.finetune = False  # test_teacher_finetune_drops_stage_settings covers that path
  c.student.hidden_size, c.student.intermediate_size = 24, 48  # 12 heads of width 2
  c.stages = tuple({**st, "set": {k: _swap(v, "all-MiniLM-L6-v2", src)
                                  for k, v in st.get("set", {}).items()}} for st in c.stages)
  c.report.compression = False
  c.cache_dir = str(tmp_path / "cache")
  run = tmp_path / "run"
  out = train_and_evaluate(c, run)
  assert out["name"] == "tinybert_tiny_prediction" and int(out["state"].step) > 0
  # mlm_head: only the MLM head trained, on the frozen pretrained encoder.
  before = _flat(params_of(load_pretrained(src)[0]))
  head = _flat(params_of(load_pretrained(str(run / "mlm_head/export"), mlm_head=True)[0]))
  changed = {k for k in before if not np.array_equal(before[k], head[k])}
  assert changed == set()
  fresh = _flat(params_of(load_pretrained(src, mlm_head=True, seed=c.seed)[0]))  # its start
  trained = {k for k in head if not np.array_equal(fresh[k], head[k])}
  assert trained and all("mlm_" in k for k in trained), trained
  # augment: originals plus copies; intermediate and prediction read it.
  rows = (run / "augment" / OUTPUT).read_text().splitlines()
  assert len(rows) > 48 and all("label" in json.loads(r) for r in rows)
  inter = [json.loads(l) for l in (run / "intermediate/metrics.jsonl").read_text().splitlines()]
  assert {"train/loss/tinybert_embedding", "train/loss/tinybert_hidden",
          "train/loss/tinybert_attention"} <= set().union(*inter)
  final, _ = load_pretrained(str(run / "export"))
  assert (final.config.num_layers, final.config.hidden_size, final.config.num_heads) == (2, 24, 12)
  # A rerun: every stage is skipped (files untouched) and the last resumes at its end.
  files = [run / "mlm_head/export/model.safetensors",
           run / "augment" / OUTPUT, run / "intermediate/export/model.safetensors"]
  stamps = [f.stat().st_mtime_ns for f in files]
  n_train = sum("train/loss" in l for l in (run / "metrics.jsonl").read_text().splitlines())
  train_and_evaluate(c, run)
  assert [f.stat().st_mtime_ns for f in files] == stamps
  assert sum("train/loss" in l for l in (run / "metrics.jsonl").read_text().splitlines()) == n_train


def test_teacher_finetune_drops_stage_settings():
  """The first train stage fine-tunes the teacher from its own config; the mlm_head stage's
  frozen encoder, step cap and MLM head (or the augmented data) must not leak into it."""
  from jaxdistill.pipeline import finetune_config, plan, stage_config
  c = load_config("configs/tinybert.py")
  outputs = {"mlm_head": "/x/mlm_head/export", "augment": "/x/augment/aug.jsonl"}
  stages = plan(c, Path("/x"))
  for st in stages[0], stages[2]:
    t = finetune_config(stage_config(c, st, outputs, Path("/x")))
    assert (t.optim.train_only, t.optim.freeze, t.train.max_steps) == ((), (), 0)
    assert (t.data.train_override, t.student.mlm_head, t.student.source) == ("", False, "all-MiniLM-L6-v2")
    assert (t.student.init, t.train.epochs, t.optim.lr) == ("pretrained", c.teacher.epochs, c.teacher.lr)
    assert [k for k, w in t.losses.items() if w] == ["hard_ce"]
