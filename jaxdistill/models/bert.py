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
- Dropout masks are 16-bit random integers compared against a threshold (much cheaper than
  `jax.random.bernoulli`). The bits are JAX's own Threefry-2x32 (same key schedule, rounds and
  counters as `jax.random.bits`), written out unrolled and using all 64 bits of each block
  for four masks: on CPU `jax.random.bits` lowers Threefry to a rolled loop that writes every
  intermediate to memory and keeps 16 of each block's 64 bits: ~8% of a step (docs/performance.md).
- Exact GELU has a custom JVP (the forward keeps Phi(x) + x phi(x) for the backward) and LayerNorm
  a custom VJP (the fused backward): both halve autodiff's elementwise work, same values.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from jaxdistill.core.outputs import BertOutput, Collect
from jaxdistill.models import families
from jaxdistill.models.config import BertConfig

Array = jax.Array


@flax.struct.dataclass
class LayerInternals:
  scores: Optional[Array] = None
  probs: Optional[Array] = None
  q: Optional[Array] = None
  k: Optional[Array] = None
  v: Optional[Array] = None


_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(k1: Array, k2: Array, x1: Array, x2: Array) -> tuple[Array, Array]:
  """Threefry-2x32, 20 rounds (Salmon et al. 2011), as jax.random computes it: the same key
  schedule, rotations and round count, on uint32 counters (x1, x2); elementwise, so XLA fuses
  it into one loop. For key data (k1, k2) and counters (0, i), `y1 ^ y2` equals
  `jax.random.bits(key, (n,), jnp.uint32)[i]` (tests/test_bench.py checks it)."""
  def rotl(v, r):
    return (v << jnp.uint32(r)) | (v >> jnp.uint32(32 - r))

  ks = (k1, k2, k1 ^ k2 ^ jnp.uint32(0x1BD11BDA))
  a, b = x1 + ks[0], x2 + ks[1]
  for i in range(5):
    for r in _THREEFRY_ROTATIONS[i % 2]:
      a = a + b
      b = rotl(b, r) ^ a
    a = a + ks[(i + 1) % 3]
    b = b + ks[(i + 2) % 3] + jnp.uint32(i + 1)
  return a, b


def random_uint16(key: Array, shape: tuple[int, ...]) -> Array:
  """Uniform 16-bit integers of `shape`: four per Threefry block (its two 32-bit words split
  in halves). Keys of another PRNG implementation go through jax.random.bits."""
  if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
    if str(jax.random.key_impl(key)) != "threefry2x32":
      return jax.random.bits(key, shape, jnp.uint16)
    data = jax.random.key_data(key)
  elif key.shape == (2,) and key.dtype == jnp.uint32:  # a legacy raw PRNGKey
    data = key
  else:
    return jax.random.bits(key, shape, jnp.uint16)
  n = math.prod(shape)
  blocks = -(-n // 4)
  counter = jax.lax.iota(jnp.uint32, blocks)
  y1, y2 = threefry2x32(data[0], data[1], jnp.zeros_like(counter), counter)
  halves = jnp.stack([y1, y1 >> 16, y2, y2 >> 16]).astype(jnp.uint16)  # [4, blocks]
  return halves.reshape(-1)[:n].reshape(shape)


def dropout(x: Array, rate: float, key: Optional[Array]) -> Array:
  """Inverted dropout from 16 random bits per element; identity when key is None."""
  if key is None or rate <= 0.0:
    return x
  threshold = min(int(round(rate * 65536)), 65535)
  keep = random_uint16(key, x.shape) >= jnp.uint16(threshold)
  scale = 65536.0 / (65536 - threshold)  # exact for the quantised rate, so E[out] = x
  return jnp.where(keep, x * jnp.asarray(scale, x.dtype), jnp.zeros((), x.dtype))


def _fold(key: Optional[Array], i: int) -> Optional[Array]:
  return None if key is None else jax.random.fold_in(key, i)


_SQRT_HALF = 1.0 / math.sqrt(2.0)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


@jax.custom_jvp
def gelu_exact(x: Array) -> Array:
  """x * Phi(x), Phi the standard normal CDF (BERT's "gelu"), in x's dtype."""
  return x * (0.5 + 0.5 * jax.lax.erf(x * jnp.asarray(_SQRT_HALF, x.dtype)))


@gelu_exact.defjvp
def _gelu_exact_jvp(primals, tangents):
  # d/dx x Phi(x) = Phi(x) + x phi(x). Written out, the forward pass computes erf and exp once
  # and keeps one array for the backward; autodiff of jax.nn.gelu recomputes more (erfc, and
  # its derivative's exp, in separate passes): ~2x the elementwise time on CPU.
  (x,), (t,) = primals, tangents
  cdf = 0.5 + 0.5 * jax.lax.erf(x * jnp.asarray(_SQRT_HALF, x.dtype))
  pdf = jnp.exp(-0.5 * x * x) * jnp.asarray(_INV_SQRT_2PI, x.dtype)
  return x * cdf, t * (cdf + x * pdf)


def activation(name: str):
  return {
      "gelu": gelu_exact,
      "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
      "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
      "relu": jax.nn.relu,
      "silu": jax.nn.silu,
      "swish": jax.nn.silu,
      "tanh": jnp.tanh,
  }[name]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def layer_norm(x: Array, scale: Array, bias: Array, eps: float) -> Array:
  """LayerNorm over the last axis with float32 statistics; the output has x's dtype."""
  return _layer_norm_fwd(x, scale, bias, eps)[0]


def _layer_norm_fwd(x, scale, bias, eps):
  x32 = x.astype(jnp.float32)
  centred = x32 - jnp.mean(x32, axis=-1, keepdims=True)
  rstd = jax.lax.rsqrt(jnp.mean(centred * centred, axis=-1, keepdims=True) + eps)
  normed = centred * rstd
  y = normed * scale.astype(jnp.float32) + bias.astype(jnp.float32)
  return y.astype(x.dtype), (normed, rstd, scale, bias)


def _layer_norm_bwd(eps, res, g):
  # The textbook fused backward: dx = rstd * (g' - mean(g') - x_hat mean(g' x_hat)), g' = g * scale.
  del eps
  normed, rstd, scale, bias = res
  x_dtype = g.dtype  # the output's dtype, which is x's
  g = g.astype(jnp.float32)
  gn = g * scale.astype(jnp.float32)
  dx = rstd * (gn - jnp.mean(gn, axis=-1, keepdims=True)
               - normed * jnp.mean(gn * normed, axis=-1, keepdims=True))
  batch_axes = tuple(range(g.ndim - 1))
  return (dx.astype(x_dtype), jnp.sum(g * normed, axis=batch_axes).astype(scale.dtype),
          jnp.sum(g, axis=batch_axes).astype(bias.dtype))


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


class LayerNorm(nnx.Module):
  """nnx.LayerNorm's parameters (`scale`, `bias`; the checkpoint layout is unchanged) applied
  through `layer_norm`'s custom VJP."""

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    del rngs
    self.scale = nnx.Param(jnp.ones((cfg.hidden_size,), cfg.params_dtype))
    self.bias = nnx.Param(jnp.zeros((cfg.hidden_size,), cfg.params_dtype))
    self.epsilon = cfg.layer_norm_eps
    self.dtype = cfg.compute_dtype

  def __call__(self, x: Array) -> Array:
    return layer_norm(x.astype(self.dtype), self.scale[...], self.bias[...], self.epsilon)


def _init(cfg: BertConfig):
  return nnx.initializers.normal(cfg.initializer_range)


def _linear(cfg: BertConfig, d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(d_in, d_out, kernel_init=_init(cfg), dtype=cfg.compute_dtype,
                    param_dtype=cfg.params_dtype, rngs=rngs)


def _layer_norm(cfg: BertConfig, rngs: nnx.Rngs) -> LayerNorm:
  return LayerNorm(cfg, rngs)


class HeadProjection(nnx.Module):
  """x [B, S, H] -> [B, N, S, D] with kernel [H, N, D] and bias [N, D]."""

  def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
    shape = (cfg.hidden_size, cfg.num_heads, cfg.head_dim)
    self.kernel = nnx.Param(_init(cfg)(rngs.params(), shape, cfg.params_dtype))
    self.bias = nnx.Param(jnp.zeros(shape[1:], cfg.params_dtype))
    self.dtype = cfg.compute_dtype

  def __call__(self, x: Array, multiplier: float = 1.0) -> Array:
    """(x W + b) * multiplier, the multiplier folded into W and b (H x N x D values, not
    B x N x S x D)."""
    kernel, bias = self.kernel[...], self.bias[...]
    if multiplier != 1.0:
      kernel, bias = kernel * multiplier, bias * multiplier
    y = jnp.einsum("bsh,hnd->bnsd", x, kernel.astype(self.dtype))
    return y + bias.astype(self.dtype)[None, :, None, :]


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

  def project_qkv(self, h: Array, q_scale: float) -> tuple[Array, Array, Array]:
    """Q (times q_scale), K, V in head-major [B, N, S, D] from one [B*S, H] x [H, 3H] matmul:
    one large dense matmul then a transpose beats three head-major einsums by ~3% of a
    distillation step on CPU (`python -m jaxdistill.bench.ab --variants current,three_projections`).
    The parameters stay three [H, N, D] kernels, so checkpoints are unchanged."""
    cfg, dt = self.cfg, self.cfg.compute_dtype
    b, s, width = h.shape
    kernel = jnp.stack([self.query.kernel[...] * q_scale, self.key.kernel[...], self.value.kernel[...]], 1)
    bias = jnp.stack([self.query.bias[...] * q_scale, self.key.bias[...], self.value.bias[...]], 0)
    x = h.reshape(b * s, width) @ kernel.reshape(width, -1).astype(dt) + bias.reshape(-1).astype(dt)
    x = x.reshape(b, s, 3, cfg.num_heads, cfg.head_dim).transpose(2, 0, 3, 1, 4)
    return x[0], x[1], x[2]

  def __call__(self, h: Array, mask: Array, dropout_key, collect: Collect):
    cfg = self.cfg
    # 1/sqrt(D) is folded into the query projection's weights rather than applied to the
    # [B, N, S, S] scores: ~2% of a distillation step on CPU (docs/performance.md).
    scale = 1.0 / math.sqrt(cfg.head_dim)
    q, k, v = self.project_qkv(h, scale)
    scores = jnp.einsum("bnqd,bnkd->bnqk", q, k)
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
        q=q / jnp.asarray(scale, q.dtype) if collect.qkv else None,  # the unscaled queries
        k=k if collect.qkv else None, v=v if collect.qkv else None)
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
  """BERT encoder, the task head `cfg.head` names, and an optional tied MLM head.

  `BertOutput.logits` (float32) by head kind, as the transformers class of that head computes it:
  - "sequence" (BertForSequenceClassification): [B, num_labels], from the [CLS] pooler;
  - "span" (BertForQuestionAnswering): [B, S, 2], start logits at [..., 0] and end logits at
    [..., 1] (`span_logits` splits them); no pooler, no dropout before the projection;
  - "token" (BertForTokenClassification): [B, S, num_labels]; no pooler.
  Per-token logits exist at pad positions too (transformers does not mask them either): a loss
  or decoder masks them with the attention mask. `pooled` is None without a pooler. The head's
  output layer is `classifier` for every kind. RoBERTa / ELECTRA / DistilBERT: families.py.
  """

  def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    self.embeddings = families.embeddings(cfg, rngs)
    self.layers = nnx.List([BertLayer(cfg, rngs) for _ in range(cfg.num_layers)])
    if cfg.head == "sequence":
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

  def head(self, last_hidden: Array, *, dropout_key=None) -> tuple[Optional[Array], Array]:
    """(pooled [B, H] or None, logits) from last_hidden [B, S, H]; see the class docstring."""
    if self.config.family != "bert":
      return families.head(self, last_hidden, dropout_key)
    kind, rate = self.config.head, self.config.hidden_dropout
    if kind == "span":  # BertForQuestionAnswering applies no dropout here
      return None, self.classifier(last_hidden).astype(jnp.float32)
    if kind == "token":
      return None, self.classifier(dropout(last_hidden, rate, dropout_key)).astype(jnp.float32)
    pooled = jnp.tanh(self.pooler(last_hidden[:, 0]))  # [CLS]: dense + tanh
    logits = self.classifier(dropout(pooled, rate, dropout_key))
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
    return encode(self, input_ids, attention_mask, token_type_ids, dropout_key, collect,
                  mlm=self._mlm_or_error if with_mlm else None)


def encode(model, input_ids: Array, attention_mask: Optional[Array], token_type_ids: Optional[Array],
           dropout_key, collect: Collect, mlm=None) -> BertOutput:
  """The forward pass shared by BertModel and MobileBERT (any model with `embed`, `layers`
  and `head` of these signatures): the internals `collect` asks for, and `mlm(h)`'s logits
  when given. Dropout keys: 0 for the embeddings, i + 1 for layer i, 10,000 for the head."""
  if attention_mask is None:
    attention_mask = jnp.ones_like(input_ids)
  mask = attention_mask.astype(bool)
  h = model.embed(input_ids, token_type_ids, dropout_key=_fold(dropout_key, 0))
  hidden, per_layer = [h], []
  for i, layer in enumerate(model.layers):
    h, internals = layer(h, mask, dropout_key=_fold(dropout_key, i + 1), collect=collect)
    hidden.append(h)
    per_layer.append(internals)
  pooled, logits = model.head(h, dropout_key=_fold(dropout_key, 10_000))

  def gather(field: str, wanted: bool):
    return tuple(getattr(x, field) for x in per_layer) if wanted else None

  return BertOutput(
      last_hidden=h, pooled=pooled, logits=logits,
      mlm_logits=mlm(h) if mlm is not None else None,
      hidden_states=tuple(hidden) if collect.hidden_states else None,
      attention_scores=gather("scores", collect.attention_scores),
      attention_probs=gather("probs", collect.attention_probs),
      queries=gather("q", collect.qkv), keys=gather("k", collect.qkv),
      values=gather("v", collect.qkv))


def span_logits(logits: Array) -> tuple[Array, Array]:
  """A span head's logits [B, S, 2] as (start [B, S], end [B, S]), transformers' two outputs."""
  return logits[..., 0], logits[..., 1]


def count_params(tree) -> int:
  return sum(int(x.size) for x in jax.tree_util.tree_leaves(tree))
