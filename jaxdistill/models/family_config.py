"""The non-BERT families' config side (no JAX, no modules): config.json translation and the
config checks. families.py holds their modules; config.py imports this at the top (families.py
imports bert, which imports config, so config cannot import families)."""

from __future__ import annotations

from typing import Any

# model_type -> the transformers class-name stem of that family.
CLASS_STEMS = {"bert": "Bert", "roberta": "Roberta", "xlm-roberta": "XLMRoberta",
               "electra": "Electra", "distilbert": "DistilBert"}
FAMILIES = tuple(CLASS_STEMS)
POOLER_ACTS = {"roberta": "tanh", "xlm-roberta": "tanh", "electra": "gelu", "distilbert": "relu"}
# DistilBERT's config.json keys -> BERT's (the rest are shared, or absent from DistilBERT).
DISTILBERT_KEYS = {"dim": "hidden_size", "n_layers": "num_hidden_layers",
                   "n_heads": "num_attention_heads", "hidden_dim": "intermediate_size",
                   "activation": "hidden_act", "dropout": "hidden_dropout_prob",
                   "attention_dropout": "attention_probs_dropout_prob"}


def check_config(cfg) -> None:
  """BertConfig.__post_init__'s checks for the non-BERT families."""
  if cfg.family not in FAMILIES:
    raise ValueError(f"family {cfg.family!r} is not supported; use one of {FAMILIES}")
  if cfg.mlm_head:
    raise ValueError(f"mlm_head=True is BERT-only (family={cfg.family!r}); set mlm_head=False")
  if cfg.embedding_size and cfg.family != "electra":
    raise ValueError(f"embedding_size is ELECTRA's (family={cfg.family!r}); set embedding_size=0")
  if cfg.family == "distilbert" and cfg.type_vocab_size:
    raise ValueError("DistilBERT has no token types; set type_vocab_size=0")
  if cfg.family in ("roberta", "xlm-roberta") and cfg.max_position_embeddings <= cfg.pad_token_id + 1:
    raise ValueError(f"{cfg.family} positions start after pad_token_id={cfg.pad_token_id}; "
                     "raise max_position_embeddings")


# ---- config.json ---------------------------------------------------------------------------
def hf_dict_as_bert(d: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
  """A family's config.json as BERT's keys and architecture names, plus the BertConfig fields
  only the family sets (family, embedding_size, ...). Raises on an unknown model_type."""
  model_type = d.get("model_type")
  if model_type not in CLASS_STEMS:
    raise ValueError(f"config.json has model_type={model_type!r}; jaxdistill loads BERT checkpoints "
                     f"and their kin only: model_type {', '.join(map(repr, FAMILIES))}")
  if model_type == "bert":
    return d, {}
  stem = CLASS_STEMS[model_type]
  d = dict(d, model_type="bert",
           architectures=[a.replace(stem, "Bert", 1) if a.startswith(stem) else a
                          for a in d.get("architectures") or ()])
  extras: dict[str, Any] = {"family": model_type}
  if model_type == "distilbert":
    for ours, theirs in DISTILBERT_KEYS.items():
      if ours in d:
        d[theirs] = d.pop(ours)
    d.update(type_vocab_size=0, layer_norm_eps=1e-12)  # DistilBERT's eps is fixed in code
    d.setdefault("intermediate_size", 3072)  # the few DistilBertConfig defaults BERT's lack
    d.setdefault("hidden_size", 768)
    d.setdefault("num_hidden_layers", 6)
    d.setdefault("num_attention_heads", 12)
    extras["classifier_dropout"] = d.get("seq_classif_dropout", 0.2)
    extras["sinusoidal_positions"] = bool(d.get("sinusoidal_pos_embds", False))
  else:
    if d.get("classifier_dropout") is not None:
      extras["classifier_dropout"] = d["classifier_dropout"]
    if model_type == "electra":
      width = d.get("embedding_size", d.get("hidden_size"))
      extras["embedding_size"] = 0 if width == d.get("hidden_size") else width
  return d, extras


def bert_dict_as_family(cfg, d: dict[str, Any]) -> dict[str, Any]:
  """BertConfig.to_hf_dict's BERT dict `d` rewritten in `cfg.family`'s keys and classes."""
  if cfg.family == "bert":
    return d
  stem = CLASS_STEMS[cfg.family]
  d = dict(d, model_type=cfg.family,
           architectures=[a.replace("Bert", stem, 1) for a in d["architectures"]])
  if cfg.family == "distilbert":
    for ours, theirs in DISTILBERT_KEYS.items():
      d[ours] = d.pop(theirs)
    for k in ("type_vocab_size", "layer_norm_eps", "position_embedding_type"):
      d.pop(k)
    d["seq_classif_dropout"] = _classifier_rate(cfg)
    d["sinusoidal_pos_embds"] = cfg.sinusoidal_positions
    return d
  d["classifier_dropout"] = cfg.classifier_dropout
  d.pop("tie_word_embeddings")  # there is no MLM head to tie
  if cfg.family == "electra":
    d["embedding_size"] = cfg.embedding_size or cfg.hidden_size
  return d


def _classifier_rate(cfg) -> float:
  return cfg.hidden_dropout if cfg.classifier_dropout is None else cfg.classifier_dropout
