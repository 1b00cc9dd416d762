"""MobileBERT's bottleneck encoder (Sun et al., ACL 2020, Fig. 1(c)) in Flax NNX, at small scale.

Every block reads and writes the *inter-block* width (`hidden_size`, = the teacher's width, so
its feature maps are compared with the teacher's without a projection) and works inside at
the narrow *intra-block* width (`intra_size`):

    x   = Norm(h W_in + b)                        input bottleneck  [B, S, intra]
    x_qk = Norm(h W_qk + b)                       key-query shared bottleneck (flag)
    q, k = x_qk W_q, x_qk W_k;   v = h W_v        values from the wide inter-block input
    a   = Norm(x + Attn(q, k, v) W_o)             residual at intra width
    a   = Norm(a + W_2 act(W_1 a))   x num_ffn     stacked FFNs (intermediate_size)
    out = Norm(h + Dropout(a W_out))              output bottleneck, residual at inter width

This is the released MobileBERT's structure (key_query_shared_bottleneck=True,
use_bottleneck_attention=False in its config; the TF and HF implementations agree): the
paper feeds the attention from the wide feature map (values) while Q and K come from a
bottleneck of their own. `key_query_shared_bottleneck=False` computes Q and K from the input
bottleneck x instead (one bottleneck fewer). `normalization="no_norm"` is the paper's NoNorm
(x * gamma + beta, elementwise, no statistics). Embeddings are BERT's at the inter-block
width (so they can be copied from the teacher); `embedding_size > 0` is the paper's
compression instead: a narrow table, the [next, this, previous] token embeddings concatenated
(a kernel-3 convolution) and projected to the inter-block width.

The model is called like BertModel and returns a BertOutput (hidden states at the inter-block
width, embeddings first; per-layer attention scores, probabilities, Q/K/V). Checkpoints are our
own format: config.json with "jaxdistill_arch": "mobilebert" and the flattened params as
model.safetensors (`save` / `load`, reached through hub.save_pretrained / load_pretrained).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from jaxdistill.models import hub, registry
# bert's _init/_linear read only initializer_range and the dtypes, which this config has too.
from jaxdistill.models.bert import (BertOutput, Collect, LayerInternals, _fold, _init, _linear,
                                    activation, dropout, encode)
from jaxdistill.models.config import ACTIVATIONS, BertConfig, ModelConfig

log = logging.getLogger(__name__)
Array = jax.Array
NORMS = ("layer_norm", "no_norm")


@dataclasses.dataclass(frozen=True)
class MobileBertConfig(ModelConfig):
  arch = "mobilebert"  # class attribute, not a field: registry.arch_name reads it
  vocab_size: int = 30522
  hidden_size: int = 384        # inter-block width (feature maps, embeddings, pooler)
  intra_size: int = 96          # intra-block width (attention and FFNs)
  num_layers: int = 6
  num_heads: int = 12
  num_ffn: int = 4              # stacked FFNs per block
  intermediate_size: int = 384  # each FFN's inner width
  embedding_size: int = 0       # 0: BERT embeddings at hidden_size; > 0: 3-gram compression
  key_query_shared_bottleneck: bool = True
  normalization: str = "layer_norm"
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-12
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  initializer_range: float = 0.02
  pad_token_id: int = 0
  num_labels: int = 2
  problem_type: str = "single_label_classification"
  label_names: tuple[str, ...] = ()
  mlm_head: bool = False  # no MLM head here; read by terms that need one
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    if self.intra_size % self.num_heads:
      raise ValueError(f"mobilebert intra_size {self.intra_size} is not divisible by num_heads "
                       f"{self.num_heads}; choose an intra-block width that is a multiple of it")
    if self.normalization not in NORMS:
      raise ValueError(f"mobilebert normalization {self.normalization!r}; use one of {NORMS}")
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; use one of {ACTIVATIONS}")
    if min(self.num_layers, self.num_ffn, self.intra_size, self.hidden_size) < 1:
      raise ValueError("mobilebert num_layers, num_ffn, intra_size and hidden_size must be >= 1")
    self.check_head_and_numerics()

  head_dim = property(lambda self: self.intra_size // self.num_heads)

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d.pop("dtype"), d.pop("param_dtype")  # numerics are the loader's choice, as for BERT
    names = self.label_names or tuple(f"LABEL_{i}" for i in range(self.num_labels))
    d.pop("label_names")
    # No "model_type": transformers then reads only the tokenizer files from an export
    # (with one it warns about an unknown model on every tokenizer load).
    return {registry.ARCH_KEY: self.arch, **d,
            "id2label": {str(i): n for i, n in enumerate(names)},
            "label2id": {n: i for i, n in enumerate(names)}}

  @classmethod
  def from_dict(cls, d: dict[str, Any], **overrides) -> "MobileBertConfig":
    fields = {f.name for f in dataclasses.fields(cls)}
    kw = {k: v for k, v in d.items() if k in fields}
    id2label = d.get("id2label") or {}
    names = tuple(str(id2label[k]) for k in sorted(id2label, key=int))
    if names and not all(n == f"LABEL_{i}" for i, n in enumerate(names)):
      kw["label_names"] = names
    kw.update(overrides)
    return cls(**kw)


# ---- Modules ---------------------------------------------------------------------------------
class NoNorm(nnx.Module):
  """The paper's NoNorm: x * scale + bias, elementwise (no statistics: cheap on phones)."""

  def __init__(self, width: int, cfg):
    self.scale = nnx.Param(jnp.ones((width,), cfg.params_dtype))
    self.bias = nnx.Param(jnp.zeros((width,), cfg.params_dtype))

  def __call__(self, x: Array) -> Array:
    return x * self.scale[...].astype(x.dtype) + self.bias[...].astype(x.dtype)


def _norm(cfg, width: int, rngs: nnx.Rngs):
  if cfg.normalization == "no_norm":
    return NoNorm(width, cfg)
  return nnx.LayerNorm(width, epsilon=cfg.layer_norm_eps, dtype=cfg.compute_dtype,
                       param_dtype=cfg.params_dtype, rngs=rngs)


class Bottleneck(nnx.Module):
  """Linear then norm: the inter -> intra width bottlenecks."""

  def __init__(self, cfg, rngs: nnx.Rngs):
    self.dense = _linear(cfg, cfg.hidden_size, cfg.intra_size, rngs)
    self.norm = _norm(cfg, cfg.intra_size, rngs)

  def __call__(self, h: Array) -> Array:
    return self.norm(self.dense(h))


class HeadProjection(nnx.Module):
  """x [B, S, d_in] -> [B, N, S, D]: kernel [d_in, N, D], bias [N, D] (head-major, as BERT's)."""

  def __init__(self, cfg, d_in: int, rngs: nnx.Rngs):
    shape = (d_in, cfg.num_heads, cfg.head_dim)
    self.kernel = nnx.Param(_init(cfg)(rngs.params(), shape, cfg.params_dtype))
    self.bias = nnx.Param(jnp.zeros(shape[1:], cfg.params_dtype))
    self.dtype = cfg.compute_dtype

  def __call__(self, x: Array) -> Array:
    y = jnp.einsum("bsh,hnd->bnsd", x, self.kernel[...].astype(self.dtype))
    return y + self.bias[...].astype(self.dtype)[None, :, None, :]


class FFN(nnx.Module):

  def __init__(self, cfg, rngs: nnx.Rngs):
    self.intermediate = _linear(cfg, cfg.intra_size, cfg.intermediate_size, rngs)
    self.output = _linear(cfg, cfg.intermediate_size, cfg.intra_size, rngs)
    self.norm = _norm(cfg, cfg.intra_size, rngs)
    self.act = cfg.hidden_act  # the name: static module attributes must compare equal

  def __call__(self, a: Array) -> Array:
    return self.norm(a + self.output(activation(self.act)(self.intermediate(a))))


class MobileBertLayer(nnx.Module):

  def __init__(self, cfg: MobileBertConfig, rngs: nnx.Rngs):
    self.input_bottleneck = Bottleneck(cfg, rngs)
    if cfg.key_query_shared_bottleneck:
      self.qk_bottleneck = Bottleneck(cfg, rngs)
    self.query = HeadProjection(cfg, cfg.intra_size, rngs)
    self.key = HeadProjection(cfg, cfg.intra_size, rngs)
    self.value = HeadProjection(cfg, cfg.hidden_size, rngs)
    self.out_kernel = nnx.Param(_init(cfg)(rngs.params(), (cfg.num_heads, cfg.head_dim, cfg.intra_size),
                                           cfg.params_dtype))
    self.out_bias = nnx.Param(jnp.zeros((cfg.intra_size,), cfg.params_dtype))
    self.attention_norm = _norm(cfg, cfg.intra_size, rngs)
    self.ffn = nnx.List([FFN(cfg, rngs) for _ in range(cfg.num_ffn)])
    self.output_bottleneck = _linear(cfg, cfg.intra_size, cfg.hidden_size, rngs)
    self.output_norm = _norm(cfg, cfg.hidden_size, rngs)
    self.cfg = cfg

  def __call__(self, h: Array, mask: Array, *, dropout_key=None, collect: Collect = Collect()):
    cfg, dt = self.cfg, self.cfg.compute_dtype
    x = self.input_bottleneck(h)
    x_qk = self.qk_bottleneck(h) if cfg.key_query_shared_bottleneck else x
    q, k, v = self.query(x_qk), self.key(x_qk), self.value(h)
    scores = jnp.einsum("bnqd,bnkd->bnqk", q, k) / jnp.asarray(math.sqrt(cfg.head_dim), q.dtype)
    # Padded keys get the dtype's most negative value: zero probability, never -inf.
    scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(dt)
    ctx = jnp.einsum("bnqk,bnkd->bnqd", dropout(probs, cfg.attention_dropout, _fold(dropout_key, 0)), v)
    att = jnp.einsum("bnqd,ndh->bqh", ctx, self.out_kernel[...].astype(dt))
    a = self.attention_norm(x + att + self.out_bias[...].astype(dt))
    for f in self.ffn:
      a = f(a)
    out = self.output_bottleneck(a)
    out = self.output_norm(h + dropout(out, cfg.hidden_dropout, _fold(dropout_key, 1)))
    internals = LayerInternals(
        scores=scores if collect.attention_scores else None,
        probs=probs if collect.attention_probs else None,
        q=q if collect.qkv else None, k=k if collect.qkv else None, v=v if collect.qkv else None)
    return out, internals


class Embeddings(nnx.Module):

  def __init__(self, cfg: MobileBertConfig, rngs: nnx.Rngs):
    kw = dict(embedding_init=_init(cfg), dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype,
              rngs=rngs)
    self.trigram = cfg.embedding_size > 0
    self.word = nnx.Embed(cfg.vocab_size, cfg.embedding_size or cfg.hidden_size, **kw)
    if self.trigram:
      self.transform = _linear(cfg, 3 * cfg.embedding_size, cfg.hidden_size, rngs)
    self.position = nnx.Embed(cfg.max_position_embeddings, cfg.hidden_size, **kw)
    self.token_type = nnx.Embed(cfg.type_vocab_size, cfg.hidden_size, **kw)
    self.norm = _norm(cfg, cfg.hidden_size, rngs)
    self.rate = cfg.hidden_dropout

  def __call__(self, input_ids: Array, token_type_ids: Array, dropout_key) -> Array:
    e = self.word(input_ids)
    if self.trigram:  # [e_{i+1}, e_i, e_{i-1}], zeros past either end: a kernel-3 convolution
      nxt = jnp.pad(e[:, 1:], ((0, 0), (0, 1), (0, 0)))
      prev = jnp.pad(e[:, :-1], ((0, 0), (1, 0), (0, 0)))
      e = self.transform(jnp.concatenate([nxt, e, prev], axis=-1))
    positions = jnp.arange(input_ids.shape[1])[None, :]
    h = e + self.position(positions) + self.token_type(token_type_ids)
    return dropout(self.norm(h), self.rate, dropout_key)


class MobileBertModel(nnx.Module):
  """The bottleneck encoder with BERT's pooler and classification/regression head."""

  def __init__(self, cfg: MobileBertConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    self.embeddings = Embeddings(cfg, rngs)
    self.layers = nnx.List([MobileBertLayer(cfg, rngs) for _ in range(cfg.num_layers)])
    self.pooler = _linear(cfg, cfg.hidden_size, cfg.hidden_size, rngs)
    self.classifier = _linear(cfg, cfg.hidden_size, cfg.num_labels, rngs)

  def embed(self, input_ids, token_type_ids=None, *, dropout_key=None) -> Array:
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    return self.embeddings(input_ids, token_type_ids, dropout_key)

  def head(self, last_hidden: Array, *, dropout_key=None) -> tuple[Array, Array]:
    pooled = jnp.tanh(self.pooler(last_hidden[:, 0]))
    logits = self.classifier(dropout(pooled, self.config.hidden_dropout, dropout_key))
    return pooled, logits.astype(jnp.float32)

  def __call__(self, input_ids: Array, attention_mask: Optional[Array] = None,
               token_type_ids: Optional[Array] = None, *, dropout_key=None,
               collect: Collect = Collect(), with_mlm: bool = False) -> BertOutput:
    if with_mlm or collect.mlm_logits:
      raise ValueError("the MobileBERT student has no MLM head; use a BERT student for MLM losses")
    return encode(self, input_ids, attention_mask, token_type_ids, dropout_key, collect)


# ---- Params as flat "layers.0.ffn.1.output.kernel" names (the safetensors file) -------------
def flatten(params: dict) -> dict:
  return {".".join(str(p.key) for p in path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}


def unflatten(flat: dict[str, np.ndarray]) -> dict:
  tree: dict = {}
  for name, value in flat.items():
    node, parts = tree, [int(p) if p.isdigit() else p for p in name.split(".")]
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = value
  return tree


def abstract_model(cfg: MobileBertConfig, seed: int = 0):
  return nnx.eval_shape(lambda: MobileBertModel(cfg, rngs=nnx.Rngs(seed)))


def fill_fresh(cfg, params: dict, abstract, seed: int):
  """`abstract` with `params` as its params; those `params` lacks start as hub.init_fresh
  initialises BERT's. Returns (model, the dotted names initialised)."""
  like, have = flatten(hub.params_of(abstract)), flatten(params)
  for name in like.keys() & have.keys():
    if have[name].shape != like[name].shape:
      raise ValueError(f"mobilebert param {name}: shape {have[name].shape} in the checkpoint, "
                       f"{like[name].shape} in the config; the checkpoint belongs to another config")
  fresh = [name for name in like if name not in have]
  params = hub.init_fresh(cfg, unflatten({k: have.get(k, x) for k, x in like.items()}), fresh, seed)
  return hub.with_params(abstract, params), fresh


def _head_changes(head: dict) -> dict:
  if head.get("problem_type") == "regression":
    return dict(problem_type="regression", num_labels=1, label_names=())
  if head.get("num_labels") is not None:
    return dict(problem_type="single_label_classification", num_labels=head["num_labels"],
                label_names=tuple(head.get("label_names") or ()))
  return {}


# ---- Arch: save, load, build_student ---------------------------------------------------------
def save(cfg: MobileBertConfig, params: dict, out_dir: Path) -> None:
  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  tmp = out_dir / "model.safetensors.tmp"
  save_file({k: np.asarray(v) for k, v in flatten(params).items()}, str(tmp))
  os.chmod(tmp, 0o644)  # safetensors writes 0600; the export is shared like its other files
  os.replace(tmp, out_dir / "model.safetensors")  # never a half-written weights file
  (out_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))


def load(model_dir: Path, config_dict: dict, *, seed: int = 0, head: Optional[dict] = None,
         **overrides) -> tuple[MobileBertModel, list[str]]:
  """A MobileBertModel from `save`'s files; a head of another shape starts fresh."""
  old = MobileBertConfig.from_dict(config_dict)
  cfg = MobileBertConfig.from_dict(config_dict, **_head_changes(head or {}), **overrides)
  params = unflatten(hub.read_hf_weights(model_dir))
  if (old.num_labels, old.problem_type) != (cfg.num_labels, cfg.problem_type):
    params.pop("classifier", None)
  model, fresh = fill_fresh(cfg, params, abstract_model(cfg, seed), seed)
  if fresh:
    log.info("%s: freshly initialised %s", model_dir, ", ".join(sorted(fresh)))
  return model, fresh


ARCH = registry.Arch(name="mobilebert", model_cls=MobileBertModel, load=load, save=save)
