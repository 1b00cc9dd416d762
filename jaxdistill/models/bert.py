"""A BERT encoder in Flax NNX that can hand back the internals distillation needs.

`BertModel.__call__` returns a `BertOutput`. The `Collect` flags say which internals to keep
(hidden states, pre-softmax scores, attention probabilities, per-head Q/K/V); anything not
asked for is never stored, so XLA frees it and plain inference pays nothing for it.

Layout notes (why it looks like this):
- Q/K/V kernels are [hidden, heads, head_dim] and project straight into the head-major
  [batch, heads, seq, head_dim] layout, so no transpose sits between the projection and the
  attention matmuls. The output kernel is [heads, head_dim, hidden].
- (models/ops.py) Dropout takes an explicit PRNG key (None = deterministic), derived per layer with
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

import math
from typing import Optional

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx

from jaxdistill.core.outputs import BertOutput, Collect
from jaxdistill.models import families
from jaxdistill.models.config import BertConfig
from jaxdistill.models.ops import (_fold, activation, dropout, gelu_exact, layer_norm,  # noqa: F401
                                   random_uint16, threefry2x32)  # re-exported: bert.dropout etc.

Array = jax.Array


@flax.struct.dataclass
class LayerInternals:
  scores: Optional[Array] = None
  probs: Optional[Array] = None
  q: Optional[Array] = None
  k: Optional[Array] = None
  v: Optional[Array] = None


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
    if use_fused_attention(collect, dropout_key, cfg.attention_dropout):
      out = self._fused(h, q, k, v, mask)
      internals = LayerInternals(q=q / jnp.asarray(scale, q.dtype) if collect.qkv else None,
                                 k=k if collect.qkv else None, v=v if collect.qkv else None)
      return self.norm(h + dropout(out, cfg.hidden_dropout, _fold(dropout_key, 1))), internals
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

  def _fused(self, h: Array, q: Array, k: Array, v: Array, mask: Array) -> Array:
    """jax.nn.dot_product_attention (cuDNN's flash attention on a GPU): the [B, N, S, S]
    scores are never written to memory. Q is already scaled, hence scale=1."""
    cfg = self.cfg
    q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))  # [B, S, N, D]
    ctx = jax.nn.dot_product_attention(q, k, v, mask=mask[:, None, None, :], scale=1.0)
    out = jnp.einsum("bqnd,ndh->bqh", ctx, self.out_kernel[...].astype(cfg.compute_dtype))
    return out + self.out_bias[...].astype(cfg.compute_dtype)


# None: fused attention on a GPU only (XLA CPU runs the einsums as fast, and the tests compare
# the two paths by setting this True on CPU).
FUSED_ATTENTION: Optional[bool] = None


def use_fused_attention(collect: Collect, dropout_key, attention_dropout: float) -> bool:
  """Whether a layer may use the fused kernel: no loss reads its attention maps and no
  attention dropout is drawn (the fused kernel has none), e.g. every teacher forward and
  every evaluation."""
  if collect.attention_scores or collect.attention_probs:
    return False
  if dropout_key is not None and attention_dropout > 0.0:
    return False
  wanted = FUSED_ATTENTION
  return jax.default_backend() == "gpu" if wanted is None else bool(wanted)


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
