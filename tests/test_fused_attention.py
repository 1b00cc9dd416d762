"""The fused attention path (jax.nn.dot_product_attention; cuDNN flash attention on a GPU)
gives the einsum path's outputs, and is used only where no loss reads attention maps."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxdistill.core.outputs import Collect
from jaxdistill.models import bert
from jaxdistill.models.config import BertConfig


def _model():
  cfg = BertConfig(vocab_size=50, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                   max_position_embeddings=32, num_labels=3)
  return bert.BertModel(cfg, rngs=nnx.Rngs(0))


def _inputs():
  ids = jnp.asarray(np.random.default_rng(0).integers(1, 50, size=(3, 12)), jnp.int32)
  mask = jnp.asarray([[1] * 12, [1] * 7 + [0] * 5, [1] * 2 + [0] * 10], jnp.int32)
  return ids, mask, jnp.zeros_like(ids)


def test_fused_path_equals_the_einsum_path(monkeypatch):
  model, (ids, mask, types) = _model(), _inputs()
  collect = Collect(hidden_states=True)
  monkeypatch.setattr(bert, "FUSED_ATTENTION", False)
  ref = model(ids, mask, types, collect=collect)
  monkeypatch.setattr(bert, "FUSED_ATTENTION", True)
  fused = model(ids, mask, types, collect=collect)
  np.testing.assert_allclose(fused.logits, ref.logits, atol=2e-5)
  for a, b in zip(fused.hidden_states, ref.hidden_states):
    np.testing.assert_allclose(a, b, atol=2e-5)


def test_fused_attention_is_never_used_where_maps_or_dropout_are_needed(monkeypatch):
  monkeypatch.setattr(bert, "FUSED_ATTENTION", True)
  key = jax.random.key(0)
  assert bert.use_fused_attention(Collect(), None, 0.1)
  assert not bert.use_fused_attention(Collect(attention_probs=True), None, 0.0)
  assert not bert.use_fused_attention(Collect(attention_scores=True), None, 0.0)
  assert not bert.use_fused_attention(Collect(), key, 0.1)  # training with attention dropout
  assert bert.use_fused_attention(Collect(), key, 0.0)
  monkeypatch.setattr(bert, "FUSED_ATTENTION", None)
  assert bert.use_fused_attention(Collect(), None, 0.0) == (jax.default_backend() == "gpu")


def test_fused_path_keeps_the_requested_qkv(monkeypatch):
  model, (ids, mask, types) = _model(), _inputs()
  monkeypatch.setattr(bert, "FUSED_ATTENTION", False)
  ref = model(ids, mask, types, collect=Collect(qkv=True))
  monkeypatch.setattr(bert, "FUSED_ATTENTION", True)
  fused = model(ids, mask, types, collect=Collect(qkv=True))
  for name in ("queries", "keys", "values"):
    a, b = getattr(fused, name), getattr(ref, name)
    assert a is not None and len(a) == len(b) == 2
    for x, y in zip(a, b):
      np.testing.assert_allclose(x, y, atol=2e-5)
