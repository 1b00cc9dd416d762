"""A BERT encoder in Flax NNX that can hand back the internals distillation needs.

`BertModel.__call__` returns a `BertOutput`. The `Collect` flags say which internals to keep
(hidden states, pre-softmax scores, attention probabilities, per-head Q/K/V); anything not
asked for is never stored, so XLA frees it and plain inference pays nothing for it.

Layout notes (why it looks like this):
- Q/K/V kernels are [hidden, heads, head_dim] and project straight into the head-major
  [batch, heads, seq, head_dim] layout, so no transpose sits between the projection and the
  attention matmuls. The output kernel is [heads, head_dim, hidden].
- Dropout takes an explicit PRNG key (None = deterministic), derived per layer with
  `fold_in`, so a train step is a pure function of (params, batch, key).
- Dropout masks come from `jax.random.bits` compared against an integer threshold, which is
  much cheaper than `jax.random.bernoulli` on CPU.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from jaxdistill.models.config import BertConfig

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Collect:
  """Which internals a forward pass keeps. Hashable, so it can be a static jit argument."""
  hidden_states: bool = False     # embedding output + every layer output
  attention_scores: bool = False  # pre-softmax scores, mask applied, per layer
  attention_probs: bool = False   # post-softmax probabilities (before dropout), per layer
  qkv: bool = False               # per-head queries, keys, values, per layer
  mlm_logits: bool = False        # the MLM head's [B, S, V] logits (needs cfg.mlm_head)

  def __or__(self, other: "Collect") -> "Collect":
    return Collect(*(a or b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

  @classmethod
  def everything(cls) -> "Collect":
    return cls(True, True, True, True)  # the MLM head is asked for separately


@flax.struct.dataclass
class BertOutput:
  last_hidden: Array                                   # [B, S, H]
  pooled: Optional[Array] = None                       # [B, H]
  logits: Optional[Array] = None                       # [B, num_labels]
  mlm_logits: Optional[Array] = None                   # [B, S, V]
  hidden_states: Optional[tuple[Array, ...]] = None    # L+1 x [B, S, H], embeddings first
  attention_scores: Optional[tuple[Array, ...]] = None  # L x [B, N, S, S]
  attention_probs: Optional[tuple[Array, ...]] = None  # L x [B, N, S, S]
  queries: Optional[tuple[Array, ...]] = None          # L x [B, N, S, D]
  keys: Optional[tuple[Array, ...]] = None             # L x [B, N, S, D]
  values: Optional[tuple[Array, ...]] = None           # L x [B, N, S, D]


@flax.struct.dataclass
class LayerInternals:
  scores: Optional[Array] = None
  probs: Optional[Array] = None
  q: Optional[Array] = None
  k: Optional[Array] = None
  v: Optional[Array] = None


def dropout(x: Array, rate: float, key: Optional[Array]) -> Array:
  """Inverted dropout from 16 random bits per element; identity when key is None."""
  if key is None or rate <= 0.0:
    return x
  threshold = min(int(round(rate * 65536)), 65535)
  keep = jax.random.bits(key, x.shape, jnp.uint16) >= jnp.uint16(threshold)
  scale = 65536.0 / (65536 - threshold)  # exact for the quantised rate, so E[out] = x
  return jnp.where(keep, x * jnp.asarray(scale, x.dtype), jnp.zeros((), x.dtype))


def _fold(key: Optional[Array], i: int) -> Optional[Array]:
  return None if key is None else jax.random.fold_in(key, i)


def activation(name: str):
  return {
      "gelu": lambda x: jax.nn.gelu(x, approximate=False),
      "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
      "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
      "relu": jax.nn.relu,
      "silu": jax.nn.silu,
      "swish": jax.nn.silu,
      "tanh": jnp.tanh,
  }[name]


def _init(cfg: BertConfig):
  return nnx.initializers.normal(cfg.initializer_range)


def _linear(cfg: BertConfig, d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(d_in, d_out, kernel_init=_init(cfg), dtype=cfg.compute_dtype,
                    param_dtype=cfg.params_dtype, rngs=rngs)


def _layer_norm(cfg: BertConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps, dtype=cfg.compute_dtype,
                       param_dtype=cfg.params_dtype, rngs=rngs)


class HeadProjection(nnx.Module):
  """x [B, S, H] -> [B, N, S, D] with kernel [H, N, D] and bias [N, D]."""

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    shape = (cfg.hidden_size, cfg.num_heads, cfg.head_dim)
    self.kernel = nnx.Param(_init(cfg)(rngs.params(), shape, cfg.params_dtype))
    self.bias = nnx.Param(jnp.zeros(shape[1:], cfg.params_dtype))
    self.dtype = cfg.compute_dtype

  def __call__(self, x: Array) -> Array:
    y = jnp.einsum("bsh,hnd->bnsd", x, self.kernel[...].astype(self.dtype))
    return y + self.bias[...].astype(self.dtype)[None, :, None, :]


class Embeddings(nnx.Module):

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    kw = dict(embedding_init=_init(cfg), dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype,
              rngs=rngs)
    self.word = nnx.Embed(cfg.vocab_size, cfg.hidden_size, **kw)
    self.position = nnx.Embed(cfg.max_position_embeddings, cfg.hidden_size, **kw)
    self.token_type = nnx.Embed(cfg.type_vocab_size, cfg.hidden_size, **kw)
    self.norm = _layer_norm(cfg, rngs)
    self.rate = cfg.hidden_dropout

  def __call__(self, input_ids: Array, token_type_ids: Array, dropout_key) -> Array:
    positions = jnp.arange(input_ids.shape[1])[None, :]
    h = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
    return dropout(self.norm(h), self.rate, dropout_key)


class Attention(nnx.Module):

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    self.query = HeadProjection(cfg, rngs)
    self.key = HeadProjection(cfg, rngs)
    self.value = HeadProjection(cfg, rngs)
    out_shape = (cfg.num_heads, cfg.head_dim, cfg.hidden_size)
    self.out_kernel = nnx.Param(_init(cfg)(rngs.params(), out_shape, cfg.params_dtype))
    self.out_bias = nnx.Param(jnp.zeros((cfg.hidden_size,), cfg.params_dtype))
    self.norm = _layer_norm(cfg, rngs)
    self.cfg = cfg

  def __call__(self, h: Array, mask: Array, dropout_key, collect: Collect):
    cfg = self.cfg
    q, k, v = self.query(h), self.key(h), self.value(h)
    scores = jnp.einsum("bnqd,bnkd->bnqk", q, k) / jnp.asarray(math.sqrt(cfg.head_dim), q.dtype)
    # Masked key columns take the dtype's most negative value: exactly zero probability,
    # and no -inf, so a fully padded row still softmaxes to finite numbers.
    scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(cfg.compute_dtype)
    ctx = jnp.einsum("bnqk,bnkd->bnqd", dropout(probs, cfg.attention_dropout, _fold(dropout_key, 0)), v)
    out = jnp.einsum("bnqd,ndh->bqh", ctx, self.out_kernel[...].astype(cfg.compute_dtype))
    out = out + self.out_bias[...].astype(cfg.compute_dtype)
    out = self.norm(h + dropout(out, cfg.hidden_dropout, _fold(dropout_key, 1)))
    internals = LayerInternals(
        scores=scores if collect.attention_scores else None,
        probs=probs if collect.attention_probs else None,
        q=q if collect.qkv else None, k=k if collect.qkv else None, v=v if collect.qkv else None)
    return out, internals


class BertLayer(nnx.Module):

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    self.attention = Attention(cfg, rngs)
    self.intermediate = _linear(cfg, cfg.hidden_size, cfg.intermediate_size, rngs)
    self.output = _linear(cfg, cfg.intermediate_size, cfg.hidden_size, rngs)
    self.norm = _layer_norm(cfg, rngs)
    # The activation's name, not the function, is stored: module attributes that are static
    # become part of the graphdef, and a name compares equal across model instances.
    self.act = cfg.hidden_act
    self.rate = cfg.hidden_dropout

  def __call__(self, h: Array, mask: Array, *, dropout_key=None, collect: Collect = Collect()):
    a, internals = self.attention(h, mask, _fold(dropout_key, 0), collect)
    f = self.output(activation(self.act)(self.intermediate(a)))
    return self.norm(a + dropout(f, self.rate, _fold(dropout_key, 1))), internals


class BertModel(nnx.Module):
  """BERT encoder with pooler, a classification/regression head and an optional tied MLM head."""

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    self.embeddings = Embeddings(cfg, rngs)
    self.layers = nnx.List([BertLayer(cfg, rngs) for _ in range(cfg.num_layers)])
    self.pooler = _linear(cfg, cfg.hidden_size, cfg.hidden_size, rngs)
    self.classifier = _linear(cfg, cfg.hidden_size, cfg.num_labels, rngs)
    if cfg.mlm_head:
      self.mlm_transform = _linear(cfg, cfg.hidden_size, cfg.hidden_size, rngs)
      self.mlm_norm = _layer_norm(cfg, rngs)
      self.mlm_bias = nnx.Param(jnp.zeros((cfg.vocab_size,), cfg.params_dtype))

  def embed(self, input_ids: Array, token_type_ids: Optional[Array] = None, *,
            dropout_key=None) -> Array:
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    return self.embeddings(input_ids, token_type_ids, dropout_key)

  def head(self, last_hidden: Array, *, dropout_key=None) -> tuple[Array, Array]:
    """[CLS] pooler (dense + tanh) then dropout and the classifier: (pooled, logits)."""
    pooled = jnp.tanh(self.pooler(last_hidden[:, 0]))
    logits = self.classifier(dropout(pooled, self.config.hidden_dropout, dropout_key))
    return pooled, logits.astype(jnp.float32)

  def mlm_logits(self, hidden: Array) -> Array:
    """BERT's MLM head: dense, activation, LayerNorm, then the word embeddings transposed."""
    x = self.mlm_norm(activation(self.config.hidden_act)(self.mlm_transform(hidden)))
    return (self.embeddings.word.attend(x) + self.mlm_bias[...].astype(x.dtype)).astype(jnp.float32)

  def _mlm_or_error(self, h: Array) -> Array:
    if not self.config.mlm_head:
      raise ValueError("with_mlm=True needs a model built with BertConfig(mlm_head=True)")
    return self.mlm_logits(h)

  def __call__(self, input_ids: Array, attention_mask: Optional[Array] = None,
               token_type_ids: Optional[Array] = None, *, dropout_key=None,
               collect: Collect = Collect(), with_mlm: bool = False) -> BertOutput:
    """input_ids, attention_mask, token_type_ids: [B, S] ints; attention_mask 1 = real token."""
    with_mlm = with_mlm or collect.mlm_logits
    if with_mlm and not self.config.mlm_head:  # before any work, not after the encoder ran
      self._mlm_or_error(None)
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    mask = attention_mask.astype(bool)
    h = self.embed(input_ids, token_type_ids, dropout_key=_fold(dropout_key, 0))
    hidden, per_layer = [h], []
    for i, layer in enumerate(self.layers):
      h, internals = layer(h, mask, dropout_key=_fold(dropout_key, i + 1), collect=collect)
      hidden.append(h)
      per_layer.append(internals)
    pooled, logits = self.head(h, dropout_key=_fold(dropout_key, 10_000))

    def gather(field: str, wanted: bool):
      return tuple(getattr(x, field) for x in per_layer) if wanted else None

    return BertOutput(
        last_hidden=h,
        pooled=pooled,
        logits=logits,
        mlm_logits=self._mlm_or_error(h) if with_mlm else None,
        hidden_states=tuple(hidden) if collect.hidden_states else None,
        attention_scores=gather("scores", collect.attention_scores),
        attention_probs=gather("probs", collect.attention_probs),
        queries=gather("q", collect.qkv),
        keys=gather("k", collect.qkv),
        values=gather("v", collect.qkv),
    )


def count_params(tree) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))
