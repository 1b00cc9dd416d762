"""The single-layer BiLSTM student of Tang et al. 2019 ("Distilling Task-Specific Knowledge from
BERT into Simple Neural Networks"), over the teacher tokenizer's ids.

    ids -> word embeddings [B, S, E] -> one bidirectional LSTM layer (H per direction)
        -> [forward final state; backward final state] [B, 2H] -> dense + ReLU -> logits

The LSTM cell (gates in PyTorch's i, f, g, o order):

    i, f, g, o = x_t W_x + h_{t-1} W_h + b        (split in four [H] blocks)
    c_t = sigmoid(f) * c_{t-1} + sigmoid(i) * tanh(g)
    h_t = sigmoid(o) * tanh(c_t)

Padding never enters the recurrence: at a padded position both directions keep their state
unchanged, so the forward direction ends on each row's last real token and the backward
direction starts there (it runs from the end with a zero state that padding leaves at zero).
Appending padding therefore leaves the logits unchanged (tests/test_bilstm.py checks this).

Speed on CPU: the input projection x W_x of every position and both directions is one matmul
before the recurrence; `jax.lax.scan` then runs both directions together (the backward
direction on the time-reversed sequence), one small [2, B, H] x [2, H, 4H] matmul per step.

The model is called like BertModel and returns a BertOutput (last_hidden: the per-token
[forward; backward] states, zero at padding; logits). Checkpoints are our own format:
config.json with "jaxdistill_arch": "bilstm" and model.safetensors (dotted param paths).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any, ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors.numpy import load_file, save_file

from jaxdistill.models import registry
from jaxdistill.models.bert import BertOutput, Collect, dropout
from jaxdistill.models.config import ModelConfig

log = logging.getLogger(__name__)
Array = jax.Array


@dataclasses.dataclass(frozen=True)
class BiLSTMConfig(ModelConfig):
  arch: ClassVar[str] = "bilstm"
  vocab_size: int = 30522
  embed_dim: int = 300        # the paper's word2vec width
  hidden_size: int = 150      # per direction (the paper's single-sentence model)
  dense_size: int = 200       # the ReLU layer between the BiLSTM and the logits
  dropout: float = 0.1        # on the embeddings and on the ReLU layer's output
  pad_token_id: int = 0
  num_labels: int = 2
  problem_type: str = "single_label_classification"
  label_names: tuple[str, ...] = ()
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    for f in ("vocab_size", "embed_dim", "hidden_size", "dense_size", "num_labels"):
      if int(getattr(self, f)) < 1:
        raise ValueError(f"BiLSTMConfig.{f}={getattr(self, f)} must be >= 1")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"BiLSTMConfig.dropout={self.dropout} must be in [0, 1)")
    self.check_head_and_numerics()

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["label_names"] = list(self.label_names)
    return {registry.ARCH_KEY: self.arch, "model_type": "jaxdistill-bilstm", **d}

  @classmethod
  def from_dict(cls, d: dict[str, Any], **overrides) -> "BiLSTMConfig":
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
      raise ValueError(f"a BiLSTM checkpoint has no setting {unknown[0]!r}; BiLSTMConfig fields are "
                       f"{', '.join(sorted(fields))}")
    kwargs = {k: v for k, v in d.items() if k in fields}
    kwargs.update(overrides)
    kwargs["label_names"] = tuple(kwargs.get("label_names") or ())
    return cls(**kwargs)


def _uniform(scale: float):
  return lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -scale, scale)


class WordEmbeddings(nnx.Module):
  """Only word embeddings: a recurrent model needs no positions or segments. Named like
  BertModel's (params under "embeddings/") so reports count non-embedding params alike."""

  def __init__(self, cfg: BiLSTMConfig, rngs: nnx.Rngs):
    # N(0, 1), as torch.nn.Embedding; teacher-initialised embeddings are rescaled to unit std
    # (jaxdistill.methods.bilstm), so both starts feed the LSTM inputs of the same scale.
    self.word = nnx.Embed(cfg.vocab_size, cfg.embed_dim, embedding_init=nnx.initializers.normal(1.0),
                          dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype, rngs=rngs)

  def __call__(self, ids: Array) -> Array:
    return self.word(ids)


class BiLSTMLayer(nnx.Module):
  """Both directions' weights stacked on a leading axis of 2 (0 = forward, 1 = backward)."""

  def __init__(self, cfg: BiLSTMConfig, rngs: nnx.Rngs):
    e, h = cfg.embed_dim, cfg.hidden_size
    init = _uniform(1.0 / np.sqrt(h))  # torch.nn.LSTM's initialisation
    self.input_kernel = nnx.Param(init(rngs.params(), (2, e, 4 * h), cfg.params_dtype))
    self.recurrent_kernel = nnx.Param(init(rngs.params(), (2, h, 4 * h), cfg.params_dtype))
    # Forget-gate bias 1 (Jozefowicz et al. 2015): the cell remembers by default at the start.
    bias = np.zeros((2, 4, h), np.float32)
    bias[:, 1] = 1.0
    self.bias = nnx.Param(jnp.asarray(bias.reshape(2, 4 * h), cfg.params_dtype))
    self.hidden_size = h
    self.dtype = cfg.compute_dtype

  def __call__(self, x: Array, mask: Array) -> tuple[Array, Array]:
    """x [B, S, E], mask [B, S] bool -> (final states [B, 2H], per-token states [B, S, 2H])."""
    dt, h = self.dtype, self.hidden_size
    wx = self.input_kernel[...].astype(dt)
    wh = self.recurrent_kernel[...].astype(dt)
    gx = jnp.einsum("bse,deg->dsbg", x.astype(dt), wx) + self.bias[...].astype(dt)[:, None, None, :]
    # Time-major, the backward direction's inputs and mask reversed: step t of the scan is
    # position t forwards and position S-1-t backwards.
    gx = jnp.stack([gx[0], gx[1, ::-1]], axis=1)            # [S, 2, B, 4H]
    m = mask.T                                               # [S, B]
    m = jnp.stack([m, m[::-1]], axis=1)[..., None]           # [S, 2, B, 1]

    def step(carry, inputs):
      h_prev, c_prev = carry
      g_x, keep = inputs
      g = g_x + jnp.einsum("dbh,dhg->dbg", h_prev, wh)
      i, f, gg, o = jnp.split(g.astype(jnp.float32), 4, axis=-1)
      c = jax.nn.sigmoid(f) * c_prev + jax.nn.sigmoid(i) * jnp.tanh(gg)
      h_new = (jax.nn.sigmoid(o) * jnp.tanh(c)).astype(dt)
      # Padding leaves the state as it was (and outputs zeros there).
      h_next, c_next = jnp.where(keep, h_new, h_prev), jnp.where(keep, c, c_prev)
      return (h_next, c_next), jnp.where(keep, h_new, jnp.zeros((), dt))

    b = x.shape[0]
    init = (jnp.zeros((2, b, h), dt), jnp.zeros((2, b, h), jnp.float32))
    (h_last, _), outs = jax.lax.scan(step, init, (gx, m))
    final = jnp.concatenate([h_last[0], h_last[1]], axis=-1)            # [B, 2H]
    per_token = jnp.concatenate([outs[:, 0], outs[::-1, 1]], axis=-1)    # [S, B, 2H]
    return final, jnp.swapaxes(per_token, 0, 1)


class BiLSTM(nnx.Module):
  """Tang et al.'s single-sentence BiLSTM classifier, called like BertModel."""

  def __init__(self, cfg: BiLSTMConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    self.embeddings = WordEmbeddings(cfg, rngs)
    self.lstm = BiLSTMLayer(cfg, rngs)
    kw = dict(dtype=cfg.compute_dtype, param_dtype=cfg.params_dtype, rngs=rngs)
    self.dense = nnx.Linear(2 * cfg.hidden_size, cfg.dense_size, **kw)
    self.classifier = nnx.Linear(cfg.dense_size, cfg.num_labels, **kw)

  def __call__(self, input_ids: Array, attention_mask: Optional[Array] = None,
               token_type_ids: Optional[Array] = None, *, dropout_key=None,
               collect: Collect = Collect()) -> BertOutput:
    """input_ids, attention_mask [B, S] (1 = real token); token_type_ids are ignored (one
    sentence). `collect` asks for transformer internals this model does not have."""
    if collect != Collect():
      raise ValueError("the BiLSTM student has no transformer layers, attention or MLM head to "
                       "match; use logit losses (logit_mse, kd, soft_ce, hard_ce) with student.arch=bilstm")
    cfg = self.config
    if attention_mask is None:
      attention_mask = jnp.ones_like(input_ids)
    mask = attention_mask.astype(bool)
    keys = (None, None) if dropout_key is None else tuple(jax.random.split(dropout_key))
    x = dropout(self.embeddings(input_ids), cfg.dropout, keys[0])
    final, per_token = self.lstm(x, mask)
    hidden = dropout(jax.nn.relu(self.dense(final)), cfg.dropout, keys[1])
    logits = self.classifier(hidden).astype(jnp.float32)
    return BertOutput(last_hidden=per_token, pooled=final, logits=logits)


# ---- Checkpoints ---------------------------------------------------------------------------
def flatten(params: dict, prefix: str = "") -> dict[str, np.ndarray]:
  out = {}
  for k, v in params.items():
    name = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flatten(v, name + "."))
    else:
      out[name] = v
  return out


def unflatten(flat: dict[str, Any]) -> dict:
  out: dict = {}
  for name, v in flat.items():
    node = out
    *path, last = name.split(".")
    for p in path:
      node = node.setdefault(p, {})
    node[last] = v
  return out


def params_of(model: nnx.Module) -> dict:
  return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def with_params(model: nnx.Module, params: dict) -> nnx.Module:
  graphdef, state, rest = nnx.split(model, nnx.Param, ...)
  nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
  return nnx.merge(graphdef, state, rest)


def save(cfg: BiLSTMConfig, params: dict, out_dir: Path) -> None:
  out = Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  tmp = out / "model.safetensors.tmp"
  save_file({k: np.ascontiguousarray(np.asarray(v)) for k, v in flatten(params).items()}, str(tmp))
  os.chmod(tmp, 0o644)  # safetensors writes 0600; the export is shared like its other files
  os.replace(tmp, out / "model.safetensors")  # never a half-written weights file
  (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))


def _head_changes(head: Optional[dict]) -> dict:
  head = head or {}
  if head.get("problem_type") == "regression":
    return dict(problem_type="regression", num_labels=1, label_names=())
  if head.get("num_labels") is not None:
    return dict(problem_type="single_label_classification", num_labels=head["num_labels"],
                label_names=tuple(head.get("label_names") or ()))
  return {}


def load(model_dir: Path, hf_cfg: dict, *, seed: int = 0, head: Optional[dict] = None,
         **overrides) -> tuple[BiLSTM, list[str]]:
  """A BiLSTM from `model_dir`; a head whose shape changes (other num_labels, regression)
  starts fresh, seeded by `seed`. Returns (model, dotted names of the fresh params)."""
  old = BiLSTMConfig.from_dict(hf_cfg)
  cfg = BiLSTMConfig.from_dict(hf_cfg, **_head_changes(head), **overrides)
  weights = load_file(str(Path(model_dir) / "model.safetensors"))
  if (old.num_labels, old.problem_type) != (cfg.num_labels, cfg.problem_type):
    weights = {k: v for k, v in weights.items() if not k.startswith("classifier.")}
  abstract = nnx.eval_shape(lambda: BiLSTM(cfg, rngs=nnx.Rngs(seed)))
  expected = {k: tuple(v.shape) for k, v in flatten(params_of(abstract)).items()}
  unexpected = sorted(set(weights) - set(expected))
  if unexpected:
    raise ValueError(f"{model_dir}: weights {unexpected[:3]} do not belong to a BiLSTM; the "
                     "checkpoint and its config.json disagree")
  for k, v in weights.items():
    if tuple(v.shape) != expected[k]:
      raise ValueError(f"{model_dir}: {k} has shape {tuple(v.shape)} but config.json implies "
                       f"{expected[k]}; the checkpoint and its config.json disagree")
  fresh = sorted(set(expected) - set(weights))
  flat = {k: v.astype(cfg.params_dtype) for k, v in weights.items()}
  if fresh:
    init = flatten(params_of(BiLSTM(cfg, rngs=nnx.Rngs(seed))))
    flat.update({k: init[k] for k in fresh})
    log.info("%s: freshly initialised %s", model_dir, ", ".join(fresh))
  return with_params(abstract, unflatten(flat)), fresh


ARCH = registry.Arch(name="bilstm", model_cls=BiLSTM, load=load, save=save)
