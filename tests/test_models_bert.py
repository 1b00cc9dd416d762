"""The BERT encoder's own contract, on tiny random configs.

References independent of the model code: shapes and dtypes from the documented contract,
masking checked on the exact values (zero probability, invariance to pad content and to
other rows), dropout against the Bernoulli statistics it must have, bf16 and jit against the
same model in fp32 / eager, the MLM head recomputed by hand from the word embeddings, the
parameter count against transformers' PyTorch BERT of the same config, and gradients by
autodiff reaching every parameter.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdistill.models import BertModel, Collect, count_params, dropout, hub, tiny_config

B, S = 3, 8
CFG = tiny_config(mlm_head=True, num_labels=3)
L, H, N, D, V = CFG.num_layers, CFG.hidden_size, CFG.num_heads, CFG.head_dim, CFG.vocab_size


def make_inputs(seed: int = 0):
  """[3, 8] int32 ids / mask / token types; rows have 8, 5 and 2 real tokens."""
  rng = np.random.default_rng(seed)
  mask = (np.arange(S)[None] < np.array([[8], [5], [2]])).astype(np.int32)
  ids = np.where(mask == 1, rng.integers(1, V, (B, S)), 0).astype(np.int32)
  types = (rng.integers(0, 2, (B, S)) * mask).astype(np.int32)
  return jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(types)


@pytest.fixture(scope="module")
def model():
  return BertModel(CFG, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def inputs():
  return make_inputs()


def like(model: BertModel, **cfg_changes) -> BertModel:
  """A model with `model`'s parameters (cast to the new param dtype) and a changed config,
  built abstractly so no initialiser runs."""
  cfg = model.config.replace(**cfg_changes)
  abstract = nnx.eval_shape(lambda: BertModel(cfg, rngs=nnx.Rngs(0)))
  params = jax.tree.map(lambda x: x.astype(cfg.params_dtype), hub.params_of(model))
  return hub.with_params(abstract, params)


# ---- structure ------------------------------------------------------------------------------

def test_param_tree_layout_is_stable(model):
  paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(hub.params_of(model))}
  layer = [f"['layers'][0]{s}" for s in (
      "['attention']['query']['kernel']", "['attention']['query']['bias']",
      "['attention']['key']['kernel']", "['attention']['key']['bias']",
      "['attention']['value']['kernel']", "['attention']['value']['bias']",
      "['attention']['out_kernel']", "['attention']['out_bias']",
      "['attention']['norm']['scale']", "['attention']['norm']['bias']",
      "['intermediate']['kernel']", "['intermediate']['bias']",
      "['output']['kernel']", "['output']['bias']", "['norm']['scale']", "['norm']['bias']")]
  expected = set(layer) | {s.replace("[0]", "[1]") for s in layer} | {
      "['embeddings']['word']['embedding']", "['embeddings']['position']['embedding']",
      "['embeddings']['token_type']['embedding']", "['embeddings']['norm']['scale']",
      "['embeddings']['norm']['bias']", "['pooler']['kernel']", "['pooler']['bias']",
      "['classifier']['kernel']", "['classifier']['bias']", "['mlm_transform']['kernel']",
      "['mlm_transform']['bias']", "['mlm_norm']['scale']", "['mlm_norm']['bias']", "['mlm_bias']"}
  assert paths == expected
  att = model.layers[0].attention
  assert att.query.kernel[...].shape == (H, N, D) and att.query.bias[...].shape == (N, D)
  assert att.out_kernel[...].shape == (N, D, H)


def test_param_count_matches_pytorch_bert(make_tiny_hf):
  hf = make_tiny_hf()  # BertForSequenceClassification with tiny_config's shapes, 3 labels
  ours = nnx.eval_shape(lambda: BertModel(tiny_config(num_labels=3), rngs=nnx.Rngs(0)))
  assert count_params(hub.params_of(ours)) == sum(p.numel() for p in hf.parameters())


def test_initialisation(model):
  params = hub.params_of(model)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(params))
  assert np.all(np.asarray(params["layers"][0]["norm"]["scale"]) == 1)
  assert np.all(np.asarray(params["layers"][0]["attention"]["out_bias"]) == 0)
  assert np.all(np.asarray(params["mlm_bias"]) == 0)
  std = float(np.std(params["embeddings"]["word"]["embedding"]))
  assert abs(std - CFG.initializer_range) < 0.002


# ---- Collect ---------------------------------------------------------------------------------

@pytest.mark.parametrize("collect", [
    Collect(), Collect(hidden_states=True), Collect(attention_scores=True),
    Collect(attention_probs=True), Collect(qkv=True), Collect.everything(),
], ids=["nothing", "hidden", "scores", "probs", "qkv", "everything"])
def test_collect_keeps_exactly_what_is_asked(model, inputs, collect):
  out = model(*inputs, collect=collect)
  assert out.last_hidden.shape == (B, S, H)
  assert out.pooled.shape == (B, H) and out.logits.shape == (B, 3) and out.mlm_logits is None
  wanted = {"hidden_states": (collect.hidden_states, L + 1, (B, S, H)),
            "attention_scores": (collect.attention_scores, L, (B, N, S, S)),
            "attention_probs": (collect.attention_probs, L, (B, N, S, S)),
            "queries": (collect.qkv, L, (B, N, S, D)),
            "keys": (collect.qkv, L, (B, N, S, D)),
            "values": (collect.qkv, L, (B, N, S, D))}
  for field, (asked, count, shape) in wanted.items():
    got = getattr(out, field)
    if not asked:
      assert got is None, field
    else:
      assert isinstance(got, tuple) and len(got) == count, field
      assert all(x.shape == shape and x.dtype == jnp.float32 for x in got), field
  if collect.hidden_states:
    np.testing.assert_array_equal(out.hidden_states[-1], out.last_hidden)


def test_collect_union_and_hashable():
  c = Collect(hidden_states=True) | Collect(qkv=True)
  assert c == Collect(hidden_states=True, qkv=True)
  assert Collect() | Collect.everything() == Collect.everything()
  assert len({Collect(), Collect(), c}) == 2


def test_internals_are_consistent(model, inputs):
  out = model(*inputs, collect=Collect.everything())
  for scores, probs, q, k in zip(out.attention_scores, out.attention_probs, out.queries, out.keys):
    raw = np.einsum("bnqd,bnkd->bnqk", q, k) / np.sqrt(D)
    real = np.asarray(inputs[1], bool)[:, None, None, :]
    np.testing.assert_allclose(np.asarray(scores)[np.broadcast_to(real, scores.shape)],
                               raw[np.broadcast_to(real, raw.shape)], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jax.nn.softmax(scores, -1), probs, atol=1e-6)


# ---- masking -----------------------------------------------------------------------------------

def test_masked_columns_have_exactly_zero_probability(model, inputs):
  out = model(*inputs, collect=Collect(attention_probs=True))
  pad = ~np.asarray(inputs[1], bool)
  for p in out.attention_probs:
    p = np.asarray(p)
    assert np.all(p.transpose(0, 3, 1, 2)[pad] == 0.0)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-6)


def test_pad_content_does_not_change_real_positions(model, inputs):
  ids, mask, types = inputs
  noisy_ids = jnp.where(mask == 1, ids, 7)
  noisy_types = jnp.where(mask == 1, types, 1)
  a = model(ids, mask, types)
  b = model(noisy_ids, mask, noisy_types)
  real = np.asarray(mask, bool)
  np.testing.assert_allclose(np.asarray(a.last_hidden)[real], np.asarray(b.last_hidden)[real], atol=1e-6)
  np.testing.assert_allclose(a.logits, b.logits, atol=1e-6)


def test_fully_padded_row_gives_finite_outputs_and_leaves_others_alone(model, inputs):
  ids, mask, types = inputs
  mask0 = mask.at[2].set(0)
  out = model(ids, mask0, types, collect=Collect.everything(), with_mlm=True)
  for leaf in jax.tree.leaves(out):
    assert np.all(np.isfinite(np.asarray(leaf, np.float32)))
  np.testing.assert_allclose(out.attention_probs[0][2], 1.0 / S, atol=1e-6)  # uniform
  ref = model(ids, mask, types)
  np.testing.assert_allclose(out.last_hidden[:2], ref.last_hidden[:2], atol=1e-6)


# ---- dropout -----------------------------------------------------------------------------------

def test_dropout_statistics():
  x = jax.random.normal(jax.random.key(1), (1_000_000,)) + 3.0
  out = dropout(x, 0.1, jax.random.key(2))
  kept = np.asarray(out != 0)
  assert abs(kept.mean() - 0.9) < 0.002  # binomial sd is 3e-4
  scale = 65536 / (65536 - round(0.1 * 65536))
  np.testing.assert_allclose(np.asarray(out)[kept], np.asarray(x)[kept] * scale, rtol=1e-6)
  assert abs(float(out.mean()) - float(x.mean())) < 0.01  # E[out] = x: sd of the gap ~1e-3
  ones = dropout(jnp.ones((1_000_000,)), 0.1, jax.random.key(3))
  assert abs(float(ones.mean()) - 1.0) < 0.002  # sd 3.3e-4


def test_dropout_identity_cases():
  x = jnp.arange(10.0)
  assert dropout(x, 0.1, None) is x and dropout(x, 0.0, jax.random.key(0)) is x
  y = dropout(x.astype(jnp.bfloat16), 0.5, jax.random.key(0))
  assert y.dtype == jnp.bfloat16 and 0 < int((y == 0).sum()) < 10


def test_model_dropout_keys(model, inputs):
  base = model(*inputs).last_hidden
  np.testing.assert_array_equal(model(*inputs, dropout_key=None).last_hidden, base)
  k1, k2 = jax.random.key(1), jax.random.key(2)
  a = model(*inputs, dropout_key=k1).last_hidden
  np.testing.assert_array_equal(model(*inputs, dropout_key=k1).last_hidden, a)
  b = model(*inputs, dropout_key=k2).last_hidden
  assert float(jnp.abs(a - b).max()) > 1e-3 and float(jnp.abs(a - base).max()) > 1e-3
  # With both rates 0 a key changes nothing.
  no_drop = like(model, hidden_dropout=0.0, attention_dropout=0.0)
  np.testing.assert_array_equal(no_drop(*inputs, dropout_key=k1).last_hidden, base)


# ---- numerics ----------------------------------------------------------------------------------

def test_bf16_compute(model, inputs):
  bf = like(model, dtype="bfloat16")
  out = bf(*inputs, collect=Collect.everything(), with_mlm=True)
  assert all(h.dtype == jnp.bfloat16 for h in out.hidden_states)
  assert out.last_hidden.dtype == jnp.bfloat16 and out.attention_probs[0].dtype == jnp.bfloat16
  assert out.logits.dtype == jnp.float32 and out.mlm_logits.dtype == jnp.float32
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(hub.params_of(bf)))
  ref = model(*inputs, collect=Collect(hidden_states=True), with_mlm=True)
  # bf16 has an 8-bit mantissa (~4e-3 relative); LayerNorm outputs are O(1).
  assert float(jnp.abs(out.last_hidden.astype(jnp.float32) - ref.last_hidden).max()) < 0.1
  assert float(jnp.abs(out.logits - ref.logits).max()) < 0.05
  assert float(jnp.abs(out.mlm_logits - ref.mlm_logits).max()) < 0.1


def test_bf16_params():
  cfg = tiny_config(param_dtype="bfloat16")
  model = BertModel(cfg, rngs=nnx.Rngs(0))
  assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(hub.params_of(model)))
  ids, mask, types = make_inputs()
  out = model(ids, mask, types)
  assert out.last_hidden.dtype == jnp.float32 and out.logits.dtype == jnp.float32
  # Compute stays fp32: the same bf16 values held as fp32 give the same outputs.
  fp32 = like(model, param_dtype="float32")
  np.testing.assert_allclose(out.logits, fp32(ids, mask, types).logits, atol=1e-6)


# ---- MLM head ----------------------------------------------------------------------------------

def test_mlm_head_is_tied_to_the_word_embeddings(model, inputs):
  out = model(*inputs, with_mlm=True)
  assert out.mlm_logits.shape == (B, S, V) and out.mlm_logits.dtype == jnp.float32
  # No separate decoder matrix exists.
  shapes = [x.shape for x in jax.tree.leaves(hub.params_of(model))]
  assert shapes.count((V, H)) == 1
  # Recomputed by hand: dense, gelu, LayerNorm, then the word embeddings transposed.
  p = jax.tree.map(np.asarray, hub.params_of(model))
  x = np.asarray(out.last_hidden, np.float64) @ p["mlm_transform"]["kernel"] + p["mlm_transform"]["bias"]
  x = np.asarray(jax.nn.gelu(x, approximate=False))
  x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + CFG.layer_norm_eps)
  x = x * p["mlm_norm"]["scale"] + p["mlm_norm"]["bias"]
  expected = x @ p["embeddings"]["word"]["embedding"].T + p["mlm_bias"]
  np.testing.assert_allclose(out.mlm_logits, expected, atol=1e-4)


# ---- jit ---------------------------------------------------------------------------------------

def test_jit_through_the_functional_boundary_equals_eager(model, inputs):
  graphdef, state = nnx.split(model)
  logits = jax.jit(lambda s, ids: nnx.merge(graphdef, s)(ids).logits)(state, inputs[0])
  np.testing.assert_allclose(logits, model(inputs[0]).logits, atol=1e-5)
  collect = Collect.everything()
  full = jax.jit(lambda s, *a: nnx.merge(graphdef, s)(*a, collect=collect, with_mlm=True))(state, *inputs)
  eager = model(*inputs, collect=collect, with_mlm=True)
  assert jax.tree.structure(full) == jax.tree.structure(eager)
  for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(eager)):
    np.testing.assert_allclose(a, b, atol=1e-5)


# ---- gradients ---------------------------------------------------------------------------------

def test_gradients_reach_every_parameter(model, inputs):
  ids, mask, types = inputs
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  labels = jnp.array([0, 1, 2])

  def loss(params, key):
    out = nnx.merge(graphdef, params, rest)(ids, mask, types, dropout_key=key, with_mlm=True)
    ce = -jnp.take_along_axis(jax.nn.log_softmax(out.logits), labels[:, None], 1).mean()
    mlm = -(jax.nn.log_softmax(out.mlm_logits)[..., 5] * mask).sum() / mask.sum()
    return ce + mlm

  # With dropout on, as in training.
  grads = nnx.to_pure_dict(jax.jit(jax.grad(loss))(params, jax.random.key(0)))
  for path, g in jax.tree_util.tree_leaves_with_path(grads):
    g = np.asarray(g)
    assert np.all(np.isfinite(g)) and np.any(g != 0), jax.tree_util.keystr(path)
  # Expected zeros: only the position rows past the sequence length.
  pos = np.asarray(grads["embeddings"]["position"]["embedding"])
  assert np.all(pos[S:] == 0) and np.all(np.any(pos[:S] != 0, axis=1))
  word = np.asarray(grads["embeddings"]["word"]["embedding"])
  assert np.all(np.any(word != 0, axis=1))  # the tied MLM decoder touches every row
