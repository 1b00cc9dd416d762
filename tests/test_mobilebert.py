"""MobileBERT: the bottleneck student's shapes, one block and the whole forward against a NumPy
re-implementation of Fig. 1(c), the save/load round trip, the transfer terms against NumPy
formulas, a progressive stage that moves its own block only, and configs/mobilebert.py:tiny
end to end (every stage, the rerun skipping them, the export reloading)."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdistill.config_lib import base_config, load_config
from jaxdistill.methods import mobilebert as method
from jaxdistill.models import BertModel, BertOutput, Collect, tiny_config
from jaxdistill.models.hub import load_pretrained, params_of, save_pretrained
from jaxdistill.models.mobilebert import MobileBertConfig, MobileBertModel, flatten
from jaxdistill.methods import TERMS, Inputs
from method_helpers import build_step

MB_TERMS = [n for n in TERMS if n.startswith("mobilebert_")]


def term(name: str, c):
  """The term as the composite method builds it from the config."""
  return TERMS[name].from_config(c)


def pairs_of(c, n_s: int, n_t: int):
  m = c.mobilebert
  return method.layer_pairs(tuple(m.teacher_layers), m.transfer_layer, n_s, n_t)

B, S = 3, 6
MASK = np.array([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4], np.int32)


def small_cfg(**kw):
  base = dict(vocab_size=40, hidden_size=16, intra_size=8, num_layers=2, num_heads=2, num_ffn=2,
              intermediate_size=12, max_position_embeddings=16, num_labels=3, hidden_dropout=0.0,
              attention_dropout=0.0, layer_norm_eps=1e-6)
  return MobileBertConfig(**{**base, **kw})


def random_params(model_cls, cfg, seed):
  """Every weight random (scales near 1, biases nonzero) so no norm or bias is an identity."""
  rng = np.random.default_rng(seed)
  abstract = params_of(nnx.eval_shape(lambda: model_cls(cfg, rngs=nnx.Rngs(0))))

  def fill(path, x):
    base = 1.0 if path[-1].key == "scale" else 0.0
    return jnp.asarray(base + 0.3 * rng.standard_normal(x.shape), x.dtype)
  return jax.tree_util.tree_map_with_path(fill, abstract)


def build(cfg, seed=0):
  model = nnx.eval_shape(lambda: MobileBertModel(cfg, rngs=nnx.Rngs(0)))
  graphdef, state, rest = nnx.split(model, nnx.Param, ...)
  params = random_params(MobileBertModel, cfg, seed)
  nnx.replace_by_pure_dict(state, params)
  return nnx.merge(graphdef, state, rest), params


def ids_batch(vocab, seed=0):
  ids = np.random.default_rng(seed).integers(1, vocab, (B, S)) * MASK
  types = (np.arange(S) >= 3) * MASK  # a second segment from position 3
  return jnp.asarray(ids, jnp.int32), jnp.asarray(MASK), jnp.asarray(types, jnp.int32)


# ---- NumPy reference of the paper's block (float64) -----------------------------------------
_erf = np.vectorize(math.erf)


def np_norm(x, p, cfg):
  if cfg.normalization == "no_norm":
    return x * p["scale"] + p["bias"]
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + cfg.layer_norm_eps) * p["scale"] + p["bias"]


def np_dense(x, p):
  return x @ p["kernel"] + p["bias"]


def np_block(h, mask, p, cfg):
  n, d = cfg.num_heads, cfg.intra_size // cfg.num_heads
  x = np_norm(np_dense(h, p["input_bottleneck"]["dense"]), p["input_bottleneck"]["norm"], cfg)
  x_qk = (np_norm(np_dense(h, p["qk_bottleneck"]["dense"]), p["qk_bottleneck"]["norm"], cfg)
          if cfg.key_query_shared_bottleneck else x)

  def heads(inp, proj):  # [B, S, in] -> [B, N, S, D] from a [in, N*D] matrix
    w = proj["kernel"].reshape(inp.shape[-1], n * d)
    return (inp @ w + proj["bias"].reshape(-1)).reshape(B, S, n, d).transpose(0, 2, 1, 3)

  q, k, v = heads(x_qk, p["query"]), heads(x_qk, p["key"]), heads(h, p["value"])
  scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(d) + np.where(mask[:, None, None, :], 0.0, -1e30)
  probs = np.exp(scores - scores.max(-1, keepdims=True))
  probs /= probs.sum(-1, keepdims=True)
  ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(B, S, n * d)
  a = np_norm(x + ctx @ p["out_kernel"].reshape(n * d, -1) + p["out_bias"], p["attention_norm"], cfg)
  for f in p["ffn"].values():
    u = np_dense(a, f["intermediate"])
    a = np_norm(a + np_dense(0.5 * u * (1 + _erf(u / math.sqrt(2))), f["output"]), f["norm"], cfg)
  return np_norm(h + np_dense(a, p["output_bottleneck"]), p["output_norm"], cfg), probs


def np_embeddings(ids, types, p, cfg):
  e = p["word"]["embedding"][ids]
  if cfg.embedding_size:  # [e_{i+1}, e_i, e_{i-1}], zero beyond the ends
    nxt = np.concatenate([e[:, 1:], np.zeros_like(e[:, :1])], 1)
    prev = np.concatenate([np.zeros_like(e[:, :1]), e[:, :-1]], 1)
    e = np_dense(np.concatenate([nxt, e, prev], -1), p["transform"])
  e = e + p["position"]["embedding"][:S] + p["token_type"]["embedding"][types]
  return np_norm(e, p["norm"], cfg)


def to_np(tree):
  return jax.tree.map(lambda x: np.asarray(x, np.float64), tree)


# ---- Shapes ---------------------------------------------------------------------------------
def test_bottleneck_widths_and_output_shapes():
  cfg = small_cfg(num_ffn=3)
  p = params_of(nnx.eval_shape(lambda: MobileBertModel(cfg, rngs=nnx.Rngs(0))))["layers"][0]
  H, I, N, D = 16, 8, 2, 4
  assert p["input_bottleneck"]["dense"]["kernel"].shape == (H, I)   # inter -> intra
  assert p["qk_bottleneck"]["dense"]["kernel"].shape == (H, I)
  assert p["query"]["kernel"].shape == p["key"]["kernel"].shape == (I, N, D)  # Q, K from intra
  assert p["value"]["kernel"].shape == (H, N, D)                              # V from inter
  assert p["out_kernel"].shape == (N, D, I)
  assert len(p["ffn"]) == 3 and p["ffn"][2]["intermediate"]["kernel"].shape == (I, 12)
  assert p["output_bottleneck"]["kernel"].shape == (I, H)                     # intra -> inter
  model, _ = build(cfg)
  ids, mask, types = ids_batch(cfg.vocab_size)
  out = model(ids, mask, types, collect=Collect.everything())
  assert len(out.hidden_states) == 3 and all(h.shape == (B, S, H) for h in out.hidden_states)
  assert len(out.attention_probs) == 2 and out.attention_probs[0].shape == (B, N, S, S)
  assert out.queries[0].shape == (B, N, S, D) and out.values[1].shape == (B, N, S, D)
  assert out.logits.shape == (B, 3) and out.pooled.shape == (B, H)
  plain = model(ids, mask, types)
  assert plain.hidden_states is None and np.array_equal(plain.logits, out.logits)
  np.testing.assert_allclose(np.asarray(out.attention_probs[0]).sum(-1), 1.0, rtol=1e-5)
  assert float(np.abs(np.asarray(out.attention_probs[0])[1, :, :, 4:]).max()) == 0.0  # padded keys
  no_qk = params_of(nnx.eval_shape(lambda: MobileBertModel(
      small_cfg(key_query_shared_bottleneck=False, embedding_size=4), rngs=nnx.Rngs(0))))
  assert "qk_bottleneck" not in no_qk["layers"][0]
  assert no_qk["embeddings"]["word"]["embedding"].shape == (40, 4)
  assert no_qk["embeddings"]["transform"]["kernel"].shape == (12, H)  # 3-gram -> inter width
  with pytest.raises(ValueError, match="intra_size 10 is not divisible by num_heads 12"):
    MobileBertConfig(intra_size=10, num_heads=12)
  with pytest.raises(ValueError, match="no MLM head"):
    model(ids, mask, types, collect=Collect(mlm_logits=True))


@pytest.mark.parametrize("variant", [
    dict(), dict(normalization="no_norm", key_query_shared_bottleneck=False, embedding_size=4)],
    ids=["paper", "nonorm_noqk_trigram"])
def test_forward_matches_numpy_reference(variant):
  cfg = small_cfg(**variant)
  model, params = build(cfg, seed=1)
  ids, mask, types = ids_batch(cfg.vocab_size)
  out = model(ids, mask, types, collect=Collect(hidden_states=True, attention_probs=True))
  p = to_np(params)
  h = np_embeddings(np.asarray(ids), np.asarray(types), p["embeddings"], cfg)
  np.testing.assert_allclose(out.hidden_states[0], h, rtol=1e-4, atol=1e-4)
  for i in range(cfg.num_layers):
    # Each block from the model's own input, so a block's error cannot hide in the next.
    ref, probs = np_block(np.asarray(out.hidden_states[i], np.float64), MASK.astype(bool),
                          p["layers"][i], cfg)
    np.testing.assert_allclose(out.hidden_states[i + 1], ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.attention_probs[i], probs, rtol=1e-4, atol=1e-5)
    h, _ = np_block(h, MASK.astype(bool), p["layers"][i], cfg)
  pooled = np.tanh(np_dense(h[:, 0], p["pooler"]))
  np.testing.assert_allclose(out.logits, np_dense(pooled, p["classifier"]), rtol=1e-4, atol=1e-4)


def test_save_load_round_trip_is_exact(tmp_path):
  cfg = small_cfg(label_names=("a", "b", "c"), embedding_size=4)
  model, params = build(cfg, seed=2)
  save_pretrained(cfg, params, tmp_path / "m")
  saved = json.loads((tmp_path / "m" / "config.json").read_text())
  assert saved["jaxdistill_arch"] == "mobilebert" and saved["intra_size"] == 8
  loaded, fresh = load_pretrained(str(tmp_path / "m"))
  assert isinstance(loaded, MobileBertModel) and fresh == []
  assert loaded.config == cfg
  a, b = flatten(params), flatten(params_of(loaded))
  assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
  ids, mask, types = ids_batch(cfg.vocab_size)
  assert np.array_equal(model(ids, mask, types).logits, loaded(ids, mask, types).logits)
  two, fresh = load_pretrained(str(tmp_path / "m"), num_labels=2)  # another head: fresh classifier
  assert sorted(fresh) == ["classifier.bias", "classifier.kernel"]
  assert np.array_equal(params_of(two)["pooler"]["kernel"], params["pooler"]["kernel"])


def test_build_student_copies_from_bert_and_loads_exports(tmp_path):
  from jaxdistill.methods.mobilebert import build_student
  from jaxdistill.testing import tiny_checkpoint
  bert_dir = tiny_checkpoint(tmp_path / "bert", num_layers=3, label_names=("rotten", "fresh"), seed=6)
  bert = flatten(params_of(load_pretrained(str(bert_dir))[0]))
  c = load_config("configs/mobilebert.py:tiny")
  c.mobilebert.intra_size, c.mobilebert.intermediate_size = 8, 16
  head = dict(num_labels=2, label_names=("rotten", "fresh"))
  cfg, params, fresh = build_student(c, None, str(bert_dir), head)
  assert (cfg.hidden_size, cfg.num_heads, cfg.num_layers, cfg.intra_size) == (32, 4, 2, 8)
  assert cfg.label_names == ("rotten", "fresh") and cfg.vocab_size == 30522
  flat = flatten(params)
  copied = [k for k in flat if k.startswith(("embeddings.", "pooler.", "classifier."))]
  assert len(copied) == 9 and all(np.array_equal(flat[k], bert[k]) for k in copied)
  assert sorted(fresh) == sorted(k for k in flat if k.startswith("layers."))
  c.mobilebert.copy_head, c.mobilebert.normalization = False, "no_norm"
  _, params, fresh = build_student(c, None, str(bert_dir), head)
  assert "pooler.kernel" in fresh and "embeddings.norm.scale" in fresh  # NoNorm is not a LayerNorm
  save_pretrained(cfg, flat, tmp_path / "export")  # a previous stage's export loads as it is
  again, loaded, fresh = build_student(c, None, str(tmp_path / "export"), head)
  assert again == cfg and not fresh  # the export's own config, not config.mobilebert's
  loaded = flatten(loaded)
  assert loaded.keys() == flat.keys() and all(np.array_equal(loaded[k], flat[k]) for k in flat)
  c.mobilebert.hidden_size = 48
  with pytest.raises(ValueError, match="set mobilebert.copy_embeddings=False"):
    build_student(c, None, str(bert_dir), head)


# ---- Loss terms -----------------------------------------------------------------------------
def np_ln(x, eps):
  mu = x.mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)


def np_token_mean(per_token, w):  # per_token [B, S]; mean over real tokens weighted by example
  m = MASK * w[:, None]
  return (per_token * m).sum() / m.sum()


def np_kl_rows(s, t, w):  # [B, N, S, S] probs -> KL(t || s) per head and real query, over real keys
  keys = MASK[:, None, None, :].astype(bool)
  log_ratio = np.log(np.where(keys, t, 1.0)) - np.log(np.where(keys, s, 1.0))
  kl = np.where(keys, t * log_ratio, 0.0).sum(-1)
  return np_token_mean(kl.mean(1), w)


def probs_like(rng, n):
  x = rng.normal(size=(B, n, S, S)) + np.where(MASK[:, None, None, :], 0.0, -1e9)
  e = np.exp(x - x.max(-1, keepdims=True))
  return (e / e.sum(-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("transfer_layer", [-1, 1])
def test_transfer_terms_match_numpy(transfer_layer):
  rng = np.random.default_rng(3)
  s_cfg, t_cfg = small_cfg(), tiny_config(num_layers=4, hidden_size=16, num_heads=2)
  s_h = [rng.normal(0.2, 1.5, (B, S, 16)).astype(np.float32) for _ in range(3)]
  t_h = [rng.normal(-0.1, 0.7, (B, S, 16)).astype(np.float32) for _ in range(5)]
  s_p, t_p = [probs_like(rng, 2) for _ in range(2)], [probs_like(rng, 2) for _ in range(4)]
  w = np.array([1.0, 0.5, 1.0], np.float32)
  c = base_config()
  c.mobilebert.transfer_layer = transfer_layer
  batch = {"attention_mask": jnp.asarray(MASK), "example_weight": jnp.asarray(w)}
  x = Inputs(BertOutput(last_hidden=None, hidden_states=tuple(map(jnp.asarray, s_h)),
                        attention_probs=tuple(map(jnp.asarray, s_p))),
             BertOutput(last_hidden=None, hidden_states=tuple(map(jnp.asarray, t_h)),
                        attention_probs=tuple(map(jnp.asarray, t_p))),
             batch, {}, s_cfg, t_cfg)
  pairs = [(0, 1), (1, 3)]  # 2 student layers on 4 teacher layers: (i+1)*T/S - 1
  if transfer_layer >= 0:
    pairs = [pairs[transfer_layer]]
  assert pairs_of(c, 2, 4) == pairs

  def over(fn):
    return np.mean([fn(i, j) for i, j in pairs])

  sd, td = [x.astype(np.float64) for x in s_h], [x.astype(np.float64) for x in t_h]
  want = {
      "mobilebert_feature_map": over(lambda i, j: np_token_mean(
          ((np_ln(td[j + 1], 1e-5) - np_ln(sd[i + 1], 1e-5)) ** 2).mean(-1), w)),
      "mobilebert_mean": over(lambda i, j: np_token_mean(
          (td[j + 1].mean(-1) - sd[i + 1].mean(-1)) ** 2, w)),
      "mobilebert_variance": over(lambda i, j: np_token_mean(
          np.abs(td[j + 1].var(-1) - sd[i + 1].var(-1)), w)),
      "mobilebert_attention": over(lambda i, j: np_kl_rows(s_p[i].astype(np.float64),
                                                           t_p[j].astype(np.float64), w)),
  }
  for name, value in want.items():
    assert float(term(name, c)(x)) == pytest.approx(value, rel=1e-4), name
  c.mobilebert.mean_penalty = "abs"
  assert float(term("mobilebert_mean", c)(x)) == pytest.approx(
      over(lambda i, j: np_token_mean(np.abs(td[j + 1].mean(-1) - sd[i + 1].mean(-1)), w)), rel=1e-4)


def test_transfer_errors_name_the_fix():
  c = base_config()
  c.mobilebert.transfer_layer = 2
  with pytest.raises(ValueError, match=r"transfer_layer=2 but the student has 2 layers"):
    pairs_of(c, 2, 4)
  c.mobilebert.transfer_layer, c.mobilebert.teacher_layers = -1, (3,)
  with pytest.raises(ValueError, match="one teacher layer in 0..3 for each of the 2"):
    pairs_of(c, 2, 4)
  c.mobilebert.teacher_layers = ()
  with pytest.raises(ValueError, match="set mobilebert.num_layers <= 2"):
    pairs_of(c, 3, 2)
  probs = tuple(jnp.ones((B, 2, S, S)) / S for _ in range(2))
  out = BertOutput(last_hidden=None, attention_probs=probs, hidden_states=(jnp.ones((B, S, 16)),) * 3)
  x = Inputs(out, out, {"attention_mask": jnp.asarray(MASK), "example_weight": jnp.ones(B)}, {},
             small_cfg(), tiny_config(hidden_size=24, num_heads=4))
  with pytest.raises(ValueError, match=r"equal head counts \(teacher 4 vs student 2\)"):
    term("mobilebert_attention", c)(x)
  with pytest.raises(ValueError, match="set mobilebert.hidden_size=0"):
    term("mobilebert_feature_map", c)(x)


# ---- Progressive stages through the trainer -------------------------------------------------
def test_progressive_stage_moves_its_block_only(tmp_path):
  s_cfg = small_cfg(num_layers=3)
  t_cfg = tiny_config(num_layers=3, hidden_size=16, num_heads=2, vocab_size=40)
  s_params, t_params = random_params(MobileBertModel, s_cfg, 4), random_params(BertModel, t_cfg, 5)
  # configs/mobilebert.py's own stage "layer1", applied as the stage runner applies it.
  from jaxdistill import pipeline
  c = load_config("configs/mobilebert.py:tiny")
  config = pipeline.stage_config(c, pipeline.plan(c, tmp_path)[1], {"layer0": "unused"}, tmp_path)
  assert config.mobilebert.transfer_layer == 1 and config.optim.train_only == ("student/layers/1/",)
  _, step, init, _ = build_step(config, s_cfg, t_cfg, total_steps=10)
  state = init(s_params, {})
  ids, mask, types = ids_batch(40)
  batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types,
           "labels": jnp.asarray([0, 1, 2]), "example_weight": jnp.ones((B,), jnp.float32)}
  for _ in range(2):  # the first step has lr 0 (warmup starts at 0)
    state, metrics = step(state, t_params, batch)
  assert set(metrics) >= {f"loss/{k}" for k in MB_TERMS} and "loss/hard_ce" not in metrics
  before, after = flatten(s_params), flatten(state.trainable["student"])
  moved = {k for k in before if not np.array_equal(before[k], after[k])}
  assert moved and all(k.startswith("layers.1.") for k in moved), sorted(moved)[:5]
  # Nearly all of block 1 moves (a LayerNorm whose output feeds nothing trainable may not).
  assert len(moved) >= 0.9 * sum(k.startswith("layers.1.") for k in before)


@pytest.mark.heavy
def test_tiny_config_end_to_end_reruns_and_reloads(tmp_path):
  from jaxdistill.testing import tiny_checkpoint
  from jaxdistill.pipeline import run as train_and_evaluate
  from jaxdistill.train.loop import DONE
  teacher = tiny_checkpoint(tmp_path / "teacher", num_layers=2, label_names=("rotten", "fresh"), seed=1)
  c = load_config("configs/mobilebert.py:tiny")
  assert [s["name"] for s in c.stages] == ["layer0", "layer1", "prediction"]
  c.teacher.source, c.teacher.finetune = str(teacher), False
  c.mobilebert.intra_size, c.mobilebert.intermediate_size, c.mobilebert.num_ffn = 8, 16, 2
  c.cache_dir = str(tmp_path / "cache")
  run = tmp_path / "run"
  out = train_and_evaluate(c, run)
  assert out["method"] == "mobilebert" and set(out["student"]) == {"dev", "test"}
  assert (run / "report.json").is_file()
  for stage in ("layer0", "layer1"):
    assert (run / stage / "export" / DONE).is_file()
    logged = set().union(*map(json.loads, (run / stage / "metrics.jsonl").read_text().splitlines()))
    assert {"train/loss/mobilebert_feature_map", "train/loss/mobilebert_attention"} <= logged
    assert "train/loss/kd" not in logged
  final = set().union(*map(json.loads, (run / "metrics.jsonl").read_text().splitlines()))
  assert {"train/loss/kd", "train/loss/hard_ce"} <= final
  assert "train/loss/mobilebert_feature_map" not in final
  # Stage layer1 started from layer0's export (student.source) and trained block 1 alone.
  l0, _ = load_pretrained(str(run / "layer0" / "export"))
  l1, _ = load_pretrained(str(run / "layer1" / "export"))
  p0, p1 = flatten(params_of(l0)), flatten(params_of(l1))
  for k in p0:
    assert np.array_equal(p0[k], p1[k]) != k.startswith("layers.1."), k
  # The final export reloads through the hub as a MobileBERT, with the task's labels.
  model, fresh = load_pretrained(str(run / "export"))
  assert isinstance(model, MobileBertModel) and not fresh and model.config.num_layers == 2
  assert model.config.label_names == ("rotten", "fresh")
  # A rerun skips the finished stages and resumes the last at its end: nothing trains again.
  stamps = {p: p.stat().st_mtime_ns for p in run.glob("layer*/metrics.jsonl")}
  again = train_and_evaluate(c, run)
  assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
  assert int(again["state"].step) == int(out["state"].step)
  assert again["student"] == out["student"]
