"""Checkpoint families that are BERT's encoder with small differences: RoBERTa / XLM-RoBERTa,
the ELECTRA discriminator and DistilBERT.

A family is carried by `BertConfig.family` ("bert" for BERT itself), so `BertModel(cfg)` builds
the right model wherever a config travels (train/build.py, checkpoints, testing). The layers are
BERT's own (post-LN, the same attention and FFN); what differs lives here:
- embeddings (`Embeddings`): RoBERTa numbers positions after `pad_token_id`, counting only
  non-pad ids (fairseq's make_positions, as transformers does), so pads keep the pad position;
  ELECTRA embeds at `embedding_size` and projects up to hidden_size; DistilBERT has no token
  types. A family with one token type ignores token_type_ids (RoBERTa tokenizers give none).
- the sequence head (`head`): dense + activation on the first token then `classifier`, with no
  BERT pooler: tanh for RoBERTa, GELU for ELECTRA (both with dropout before the dense too), ReLU
  for DistilBERT (pre_classifier). Our parameter names stay `pooler` and `classifier`.
- config.json keys and architecture names (`hf_dict_as_bert`, `bert_dict_as_family`); weight
  names are hf_convert.py's (its last section).
"""

from __future__ import annotations

from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxdistill.models import bert

Array = jax.Array

from jaxdistill.models.family_config import (CLASS_STEMS, FAMILIES, POOLER_ACTS,  # noqa: F401
                                            _classifier_rate, bert_dict_as_family, check_config,
                                            hf_dict_as_bert)


# ---- modules ---------------------------------------------------------------------------------
class Norm(nnx.Module):
  """bert.LayerNorm at another width (ELECTRA's embeddings): the same `scale` / `bias`."""

  def __init__(self, cfg, width: int):
    self.scale = nnx.Param(jnp.ones((width,), cfg.params_dtype))
    self.bias = nnx.Param(jnp.zeros((width,), cfg.params_dtype))
    self.epsilon = cfg.layer_norm_eps
    self.dtype = cfg.compute_dtype

  def __call__(self, x: Array) -> Array:
    return bert.layer_norm(x.astype(self.dtype), self.scale[...], self.bias[...], self.epsilon)


def sinusoids(n_pos: int, dim: int) -> np.ndarray:
  """DistilBERT's fixed position table [n_pos, dim]: sin on even, cos on odd columns."""
  angle = np.arange(n_pos)[:, None] / np.power(10000, 2 * (np.arange(dim) // 2) / dim)[None]
  out = np.zeros((n_pos, dim), np.float32)
  out[:, 0::2], out[:, 1::2] = np.sin(angle[:, 0::2]), np.cos(angle[:, 1::2])
  return out


class Embeddings(nnx.Module):
  """A family's embeddings; the parameter names are bert.Embeddings' (+ `project`)."""

  def __init__(self, cfg, rngs: nnx.Rngs):
    width = cfg.embedding_size or cfg.hidden_size
    kw = dict(embedding_init=bert._init(cfg), dtype=cfg.compute_dtype,
              param_dtype=cfg.params_dtype, rngs=rngs)
    self.word = nnx.Embed(cfg.vocab_size, width, **kw)
    self.position = nnx.Embed(cfg.max_position_embeddings, width, **kw)
    if cfg.sinusoidal_positions:
      self.position.embedding[...] = jnp.asarray(
          sinusoids(cfg.max_position_embeddings, width), cfg.params_dtype)
    if cfg.type_vocab_size:
      self.token_type = nnx.Embed(cfg.type_vocab_size, width, **kw)
    self.norm = Norm(cfg, width)
    if width != cfg.hidden_size:
      self.project = bert._linear(cfg, width, cfg.hidden_size, rngs)
    self.rate = cfg.hidden_dropout
    self.family, self.pad, self.types = cfg.family, cfg.pad_token_id, cfg.type_vocab_size

  def positions(self, input_ids: Array) -> Array:
    """[B, S] position ids: RoBERTa's pad_token_id + 1, 2, ... over non-pad ids, pads at
    pad_token_id; 0, 1, ... for the others."""
    if self.family in ("roberta", "xlm-roberta"):
      real = (input_ids != self.pad).astype(jnp.int32)
      return jnp.cumsum(real, axis=1) * real + self.pad
    return jnp.arange(input_ids.shape[1])[None, :]

  def __call__(self, input_ids: Array, token_type_ids: Array, dropout_key) -> Array:
    h = self.word(input_ids) + self.position(self.positions(input_ids))
    if self.types > 1:
      h = h + self.token_type(token_type_ids)
    elif self.types == 1:  # one type: every token is type 0, whatever the pipeline passed
      h = h + self.token_type.embedding[0].astype(h.dtype)
    h = bert.dropout(self.norm(h), self.rate, dropout_key)
    return self.project(h) if hasattr(self, "project") else h


def head(model, last_hidden: Array, dropout_key) -> tuple[Optional[Array], Array]:
  """BertModel.head for a family: (pooled [B, H] or None, float32 logits)."""
  cfg = model.config
  if cfg.head != "sequence":  # span / token heads are BERT's, but DistilBERT's QA drops first
    if cfg.head == "span" and cfg.family != "distilbert":
      return None, model.classifier(last_hidden).astype(jnp.float32)
    # DistilBERT's qa_dropout defaults to its dropout, which is what is kept here.
    h = bert.dropout(last_hidden, cfg.hidden_dropout, dropout_key)
    return None, model.classifier(h).astype(jnp.float32)
  rate = _classifier_rate(cfg)
  x = last_hidden[:, 0]  # <s> / [CLS]
  if cfg.family != "distilbert":  # RobertaClassificationHead / Electra's drop before the dense
    x = bert.dropout(x, rate, bert._fold(dropout_key, 1))
  pooled = bert.activation(POOLER_ACTS[cfg.family])(model.pooler(x))
  logits = model.classifier(bert.dropout(pooled, rate, bert._fold(dropout_key, 0)))
  return pooled, logits.astype(jnp.float32)


def embeddings(cfg, rngs: nnx.Rngs) -> nnx.Module:
  return bert.Embeddings(cfg, rngs) if cfg.family == "bert" else Embeddings(cfg, rngs)

