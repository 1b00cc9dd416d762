"""Pure conversions between jaxdistill BERT params and Hugging Face BERT state dicts.

Both directions work on plain nested dicts of NumPy arrays, the form `nnx.to_pure_dict`
gives, so nothing here touches modules. The HF side uses PyTorch's [out, in] Linear
layout; ours uses [in, out] and head-major Q/K/V kernels [H, N, D].

Our task head's output layer is `classifier` for every head kind (so code that asks whether
the head was trained reads one name); on the HF side it is `classifier` for the sequence and
token heads and `qa_outputs` for the span head (`HF_HEAD_KEYS`). Only the sequence head has a
pooler, as in transformers.
"""

from __future__ import annotations

import copy
import logging
from typing import Callable, Iterator

import numpy as np

from jaxdistill.models.config import BertConfig

log = logging.getLogger(__name__)

# (our path, HF key, to_ours, to_hf). The transforms take the config for head reshapes.
Rule = tuple[tuple, str, Callable, Callable]

HF_HEAD_KEYS = {"sequence": "classifier", "span": "qa_outputs", "token": "classifier"}
# HF key prefixes of weights a checkpoint may lack; ours then start fresh.
OPTIONAL_PREFIXES = ("pooler.", "classifier.", "qa_outputs.", "cls.")


def _t(c, w):  # [out, in] <-> [in, out]
  return np.ascontiguousarray(w.T)


def _same(c, w):
  return w


def _heads_in(c: BertConfig, w):  # HF [N*D, H] -> ours [H, N, D]
  return np.ascontiguousarray(w.T.reshape(c.hidden_size, c.num_heads, c.head_dim))


def _heads_in_hf(c: BertConfig, w):  # ours [H, N, D] -> HF [N*D, H]
  return np.ascontiguousarray(w.reshape(c.hidden_size, -1).T)


def _bias_in(c: BertConfig, b):  # [N*D] -> [N, D]
  return b.reshape(c.num_heads, c.head_dim)


def _bias_in_hf(c: BertConfig, b):
  return b.reshape(-1)


def _heads_out(c: BertConfig, w):  # HF [H, N*D] -> ours [N, D, H]
  return np.ascontiguousarray(w.T.reshape(c.num_heads, c.head_dim, c.hidden_size))


def _heads_out_hf(c: BertConfig, w):
  return np.ascontiguousarray(w.reshape(-1, c.hidden_size).T)


def _dense(ours: tuple, hf: str) -> list[Rule]:
  return [(ours + ("kernel",), hf + ".weight", _t, _t), (ours + ("bias",), hf + ".bias", _same, _same)]


def _norm(ours: tuple, hf: str) -> list[Rule]:
  return [(ours + ("scale",), hf + ".weight", _same, _same),
          (ours + ("bias",), hf + ".bias", _same, _same)]


def _embed(ours: tuple, hf: str) -> list[Rule]:
  return [(ours + ("embedding",), hf + ".weight", _same, _same)]


def encoder_rules(cfg: BertConfig) -> Iterator[Rule]:
  """Rules for the encoder and (sequence head only) pooler; HF keys without the `bert.` prefix."""
  yield from _embed(("embeddings", "word"), "embeddings.word_embeddings")
  yield from _embed(("embeddings", "position"), "embeddings.position_embeddings")
  yield from _embed(("embeddings", "token_type"), "embeddings.token_type_embeddings")
  yield from _norm(("embeddings", "norm"), "embeddings.LayerNorm")
  for i in range(cfg.num_layers):
    ours, hf = ("layers", i), f"encoder.layer.{i}"
    for name in ("query", "key", "value"):
      att = ours + ("attention", name)
      yield att + ("kernel",), f"{hf}.attention.self.{name}.weight", _heads_in, _heads_in_hf
      yield att + ("bias",), f"{hf}.attention.self.{name}.bias", _bias_in, _bias_in_hf
    yield ours + ("attention", "out_kernel"), f"{hf}.attention.output.dense.weight", _heads_out, _heads_out_hf
    yield ours + ("attention", "out_bias"), f"{hf}.attention.output.dense.bias", _same, _same
    yield from _norm(ours + ("attention", "norm"), f"{hf}.attention.output.LayerNorm")
    yield from _dense(ours + ("intermediate",), f"{hf}.intermediate.dense")
    yield from _dense(ours + ("output",), f"{hf}.output.dense")
    yield from _norm(ours + ("norm",), f"{hf}.output.LayerNorm")
  if cfg.head == "sequence":
    yield from _dense(("pooler",), "pooler.dense")


def head_rules(cfg: BertConfig) -> Iterator[Rule]:
  """Rules for the task heads; their HF keys sit outside the `bert.` prefix."""
  yield from _dense(("classifier",), HF_HEAD_KEYS[cfg.head])
  if cfg.mlm_head:
    yield from _dense(("mlm_transform",), "cls.predictions.transform.dense")
    yield from _norm(("mlm_norm",), "cls.predictions.transform.LayerNorm")
    yield ("mlm_bias",), "cls.predictions.bias", _same, _same


def normalize_hf_keys(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Strips the `bert.` prefix and renames TF-era LayerNorm gamma/beta to weight/bias."""
  out = {}
  for k, v in state.items():
    if k.startswith("bert."):
      k = k[len("bert."):]
    k = k.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
    if k == "cls.predictions.decoder.bias":
      k = "cls.predictions.bias"
    out[k] = v
  return out


def _get(tree: dict, path: tuple):
  for p in path:
    tree = tree[p]
  return tree


def _set(tree: dict, path: tuple, value) -> None:
  for p in path[:-1]:
    tree = tree[p]
  tree[path[-1]] = value


def from_hf_state(cfg: BertConfig, hf_state: dict[str, np.ndarray], init_params: dict
                  ) -> tuple[dict, list[str]]:
  """Fills a copy of `init_params` from a HF state dict.

  Encoder weights must all be present. Missing head weights (a bare BertModel checkpoint has
  no classifier; some have no pooler) keep their fresh initialisation; their paths are
  returned so the caller can say so. Raises ValueError on a shape mismatch, naming the key.
  """
  params = copy.deepcopy(init_params)
  state = normalize_hf_keys(hf_state) if cfg.family == "bert" else normalize(cfg, hf_state)
  enc, heads = _rules(cfg)
  fresh = []
  for path, key, to_ours, to_hf in enc + heads:
    if key not in state:
      if key.startswith(head_prefixes(cfg)):
        fresh.append(".".join(map(str, path)))
        continue
      raise ValueError(f"checkpoint has no weight {key!r}: it does not match its config.json "
                       f"(num_hidden_layers={cfg.num_layers}); fix the config or the weights file")
    found = np.asarray(state[key])
    expected = _get(params, path)
    expected_hf = to_hf(cfg, np.zeros(expected.shape, np.float32)).shape
    if tuple(found.shape) != tuple(expected_hf):
      raise ValueError(f"weight {key!r} has shape {tuple(found.shape)} but config.json implies "
                       f"{tuple(expected_hf)}; the config and the weights file disagree")
    value = to_ours(cfg, found)
    _set(params, path, value.astype(expected.dtype))
  if cfg.family != "bert":  # BERT keeps its old leniency (bert-base's cls.seq_relationship ...)
    check_unmapped(cfg, state, {key for _, key, _, _ in enc + heads})
  return params, fresh


def _rules(cfg: BertConfig) -> tuple[list[Rule], list[Rule]]:
  """(encoder rules, head rules) of the config's family."""
  if cfg.family == "bert":
    return list(encoder_rules(cfg)), list(head_rules(cfg))
  return list(family_encoder_rules(cfg)), list(family_head_rules(cfg))


def to_hf_state(cfg: BertConfig, params: dict, *, prefix: str | None = None) -> dict[str, np.ndarray]:
  """The state dict (float32) of the HF class `cfg.head` names (`HF_HEAD_ARCHITECTURES`:
  BertForSequenceClassification, BertForQuestionAnswering or BertForTokenClassification; for
  another family its own, e.g. RobertaForSequenceClassification). `prefix` defaults to the
  family's base-model prefix ("bert.", "roberta.", ...)."""
  if prefix is None:
      prefix = "bert." if cfg.family == "bert" else PREFIXES[cfg.family]
  enc, heads = _rules(cfg)
  out = {}
  for path, key, _, to_hf in enc:
    out[prefix + key] = to_hf(cfg, np.asarray(_get(params, path), np.float32))
  for path, key, _, to_hf in heads:
    out[key] = to_hf(cfg, np.asarray(_get(params, path), np.float32))
  return out


# ---- RoBERTa / XLM-RoBERTa, ELECTRA and DistilBERT weight names --------------------------------
# HF weight names of the RoBERTa / XLM-RoBERTa, ELECTRA and DistilBERT families.
#
# The rules are hf_convert's BERT rules with the keys renamed, so every transform (transposes,
# head-major Q/K/V) is shared. Differences from BERT's loader, on purpose:
# - a checkpoint weight no rule maps and that is not a known pretraining head (`DROPPED`) is an
#   error listing it, so a variant we do not model (another position scheme, extra layers) cannot
#   load as a silently different network;
# - only the task head may be missing (then fresh), never an encoder weight.
PREFIXES = {"roberta": "roberta.", "xlm-roberta": "roberta.", "electra": "electra.",
            "distilbert": "distilbert."}
# Pretraining heads and buffers a checkpoint may hold that a classifier does not use (keys
# after the base-model prefix is stripped). Dropped with a log line.
DROPPED = {
    "roberta": ("lm_head.", "pooler.", "embeddings.position_ids"),
    "xlm-roberta": ("lm_head.", "pooler.", "embeddings.position_ids"),
    "electra": ("discriminator_predictions.", "generator_predictions.", "generator_lm_head.",
                "embeddings.position_ids"),
    "distilbert": ("vocab_transform.", "vocab_layer_norm.", "vocab_projector.",
                   "embeddings.position_ids"),
}
# DistilBERT's names for BERT's (substring renames, applied in order).
_DISTILBERT_NAMES = (
    ("encoder.layer.", "transformer.layer."),
    ("attention.self.query", "attention.q_lin"), ("attention.self.key", "attention.k_lin"),
    ("attention.self.value", "attention.v_lin"), ("attention.output.dense", "attention.out_lin"),
    ("attention.output.LayerNorm", "sa_layer_norm"), ("intermediate.dense", "ffn.lin1"),
    ("output.dense", "ffn.lin2"), ("output.LayerNorm", "output_layer_norm"),
)


def head_prefixes(cfg) -> tuple[str, ...]:
  """HF key prefixes of the task head: the weights that may be missing (and start fresh)."""
  if cfg.family == "bert":
    return OPTIONAL_PREFIXES
  return ("classifier.", "qa_outputs.") + (("pre_classifier.",) if cfg.family == "distilbert" else ())


def family_encoder_rules(cfg) -> Iterator[Rule]:
  """The family's encoder rules, HF keys without the base-model prefix."""
  for path, key, to_ours, to_hf in encoder_rules(cfg):
    if key.startswith("pooler."):  # these families have no BERT pooler: the head's dense
      continue
    if cfg.family == "distilbert":
      if "token_type" in key:
        continue
      for bert_name, name in _DISTILBERT_NAMES:
        key = key.replace(bert_name, name)
    yield path, key, to_ours, to_hf
  if cfg.embedding_size and cfg.embedding_size != cfg.hidden_size:
    yield from _dense(("embeddings", "project"), "embeddings_project")


def family_head_rules(cfg) -> Iterator[Rule]:
  if cfg.head != "sequence":
    yield from _dense(("classifier",), HF_HEAD_KEYS[cfg.head])
  elif cfg.family == "distilbert":
    yield from _dense(("pooler",), "pre_classifier")
    yield from _dense(("classifier",), "classifier")
  else:  # RobertaClassificationHead / ElectraClassificationHead
    yield from _dense(("pooler",), "classifier.dense")
    yield from _dense(("classifier",), "classifier.out_proj")


def normalize(cfg, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Strips the base-model prefix (a bare RobertaModel etc. saves without it)."""
  prefix = PREFIXES[cfg.family]
  return {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}


def check_unmapped(cfg, state: dict[str, np.ndarray], mapped: set[str]) -> None:
  """Raises on checkpoint weights no rule maps (other than known pretraining heads)."""
  unmapped = sorted(k for k in state if k not in mapped)
  dropped = [k for k in unmapped if k.startswith(DROPPED[cfg.family])]
  unknown = [k for k in unmapped if k not in dropped and not k.startswith(head_prefixes(cfg))]
  if unknown:
    shown = ", ".join(unknown[:8]) + (f" (+{len(unknown) - 8} more)" if len(unknown) > 8 else "")
    raise ValueError(f"{cfg.family} checkpoint has weights jaxdistill does not map: {shown}; "
                     "it is not the architecture its config.json describes, or a variant "
                     "jaxdistill.models.hf_convert does not support")
  if dropped:
    log.info("%s checkpoint: not using pretraining weights %s", cfg.family,
             ", ".join(sorted({k.split(".")[0] for k in dropped})))
