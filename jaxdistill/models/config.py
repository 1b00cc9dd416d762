"""BertConfig: the static shape and numerics of a jaxdistill BERT encoder.

A frozen dataclass so it is hashable and can be closed over by jitted functions.
`from_hf_dict` / `to_hf_dict` translate to and from a Hugging Face `config.json`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax.numpy as jnp

from jaxdistill.models import family_config

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "silu", "swish", "tanh")
PROBLEM_TYPES = ("single_label_classification", "regression")
# BERT's task heads and the transformers class each one is (config.json "architectures").
# "sequence": pooler on [CLS] then classifier, logits [B, num_labels];
# "span": extractive QA, start/end logits per token, [B, S, 2]; "token": a label per token,
# [B, S, num_labels]. The last two have no pooler, as in transformers.
HEADS = ("sequence", "span", "token")
HF_HEAD_ARCHITECTURES = {"sequence": "BertForSequenceClassification",
                         "span": "BertForQuestionAnswering",
                         "token": "BertForTokenClassification"}


class ModelConfig:
  """What every model config (BERT, MobileBERT, BiLSTM) shares: the task head's fields
  (`num_labels`, `problem_type`, `label_names`), the numerics fields (`dtype` for activations,
  `param_dtype` for storage) and their checks. Subclasses are frozen dataclasses."""

  def check_head_and_numerics(self) -> None:
    if self.problem_type not in PROBLEM_TYPES:
      raise ValueError(f"problem_type {self.problem_type!r} is not supported; use one of {PROBLEM_TYPES}")
    if self.problem_type == "regression" and self.num_labels != 1:
      raise ValueError("a regression head has num_labels=1; set num_labels=1")
    if self.label_names and len(self.label_names) != self.num_labels:
      raise ValueError(f"{len(self.label_names)} label_names for num_labels={self.num_labels}; "
                       "give one name per class")
    for f in ("dtype", "param_dtype"):
      try:
        jnp.dtype(getattr(self, f))
      except TypeError:
        raise ValueError(f"{f}={getattr(self, f)!r} is not a dtype; use 'float32' or 'bfloat16'") from None

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  @property
  def params_dtype(self):
    return jnp.dtype(self.param_dtype)

  def replace(self, **changes):
    return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class BertConfig(ModelConfig):
  vocab_size: int = 30522
  hidden_size: int = 384
  num_layers: int = 6
  num_heads: int = 12
  intermediate_size: int = 1536
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  hidden_act: str = "gelu"
  layer_norm_eps: float = 1e-12
  hidden_dropout: float = 0.1
  attention_dropout: float = 0.1
  initializer_range: float = 0.02
  pad_token_id: int = 0
  # Heads. `head` is the task head's kind (HEADS); `num_labels` classes (1 for regression,
  # 2 for a span head's start and end); `mlm_head` adds a masked-LM head whose decoder is
  # tied to the word embeddings.
  head: str = "sequence"
  num_labels: int = 2
  problem_type: str = "single_label_classification"
  label_names: tuple[str, ...] = ()
  mlm_head: bool = False
  # The checkpoint family (families.FAMILIES): BERT's encoder with RoBERTa's padding-offset
  # positions, ELECTRA's embedding projection or DistilBERT's lack of token types, and each
  # family's own sequence head and HF weight names (jaxdistill/models/families.py).
  family: str = "bert"
  embedding_size: int = 0  # ELECTRA's embedding width; 0 = hidden_size (no projection)
  classifier_dropout: Optional[float] = None  # a family head's dropout; None = hidden_dropout
  sinusoidal_positions: bool = False  # DistilBERT's fixed-sinusoid init of the positions
  # Numerics: activations are computed in `dtype`, parameters stored in `param_dtype`.
  # Softmax and LayerNorm statistics are always computed in float32.
  dtype: str = "float32"
  param_dtype: str = "float32"

  def __post_init__(self):
    if self.hidden_size % self.num_heads:
      raise ValueError(
          f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}; "
          "choose a head count that divides the width")
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; use one of {ACTIVATIONS}")
    if self.head not in HEADS:
      raise ValueError(f"head {self.head!r} is not supported; use one of {HEADS}")
    if self.head != "sequence" and self.problem_type == "regression":
      raise ValueError(f"problem_type='regression' needs head='sequence' (head={self.head!r} "
                       "classifies tokens); set problem_type='single_label_classification'")
    if self.head == "span" and self.num_labels != 2:
      raise ValueError(f"a span head has num_labels=2 (start and end logits), not {self.num_labels}; "
                       "set num_labels=2, or use head='sequence' or head='token'")
    if self.family != "bert":
      family_config.check_config(self)
    self.check_head_and_numerics()

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_heads

  @property
  def max_sequence_length(self) -> int:
    """The longest input the position table covers: RoBERTa's positions start after
    pad_token_id, so its 514 rows hold 512 tokens (a gather past the table would not fail)."""
    if self.family in ("roberta", "xlm-roberta"):
      return self.max_position_embeddings - self.pad_token_id - 1
    return self.max_position_embeddings

  # ---- Hugging Face config.json ----------------------------------------------------------
  @classmethod
  def from_hf_dict(cls, d: dict[str, Any], **overrides) -> "BertConfig":
    """Builds a config from a HF `config.json` dict of BERT or another family (RoBERTa,
    XLM-RoBERTa, ELECTRA, DistilBERT: `family`); raises on any other model_type.

    The head kind is read from `architectures` (`hf_head`) unless `head=` overrides it; a
    head other than the checkpoint's does not inherit its labels (it gets the defaults, two
    unnamed classes, unless `num_labels` / `label_names` are overridden too)."""
    d, extras = family_config.hf_dict_as_bert(d)  # a RoBERTa/ELECTRA/DistilBERT config in BERT's keys
    overrides = {**extras, **overrides}
    if d.get("position_embedding_type", "absolute") != "absolute":
      raise ValueError("only absolute position embeddings are supported "
                       f"(config has {d['position_embedding_type']!r})")
    id2label = d.get("id2label") or {}
    problem_type = d.get("problem_type") or "single_label_classification"
    num_labels = d.get("num_labels", len(id2label) or 2)
    label_names = tuple(str(id2label[k]) for k in sorted(id2label, key=int)) if id2label else ()
    if label_names and all(n == f"LABEL_{i}" for i, n in enumerate(label_names)):
      label_names = ()  # HF's placeholder names carry no information.
    head = overrides.get("head") or hf_head(d)
    if head != hf_head(d):  # the checkpoint's labels are another head's: start unlabelled
      problem_type, num_labels, label_names = "single_label_classification", 2, ()
    kwargs = dict(
        vocab_size=d["vocab_size"],
        hidden_size=d["hidden_size"],
        num_layers=d["num_hidden_layers"],
        num_heads=d["num_attention_heads"],
        intermediate_size=d["intermediate_size"],
        max_position_embeddings=d.get("max_position_embeddings", 512),
        type_vocab_size=d.get("type_vocab_size", 2),
        hidden_act=d.get("hidden_act", "gelu"),
        layer_norm_eps=d.get("layer_norm_eps", 1e-12),
        hidden_dropout=d.get("hidden_dropout_prob", 0.1),
        attention_dropout=d.get("attention_probs_dropout_prob", 0.1),
        initializer_range=d.get("initializer_range", 0.02),
        pad_token_id=d.get("pad_token_id", 0) or 0,
        head=head,
        num_labels=1 if problem_type == "regression" else num_labels,
        problem_type=problem_type,
        label_names=label_names if problem_type != "regression" else (),
    )
    kwargs.update(overrides)
    return cls(**kwargs)

  def to_hf_dict(self) -> dict[str, Any]:
    return family_config.bert_dict_as_family(self, self._bert_hf_dict())

  def _bert_hf_dict(self) -> dict[str, Any]:
    names = self.label_names or tuple(f"LABEL_{i}" for i in range(self.num_labels))
    return {
        "architectures": ([HF_HEAD_ARCHITECTURES[self.head]]
                          + (["BertForMaskedLM"] if self.mlm_head else [])),
        "model_type": "bert",
        "vocab_size": self.vocab_size,
        "hidden_size": self.hidden_size,
        "num_hidden_layers": self.num_layers,
        "num_attention_heads": self.num_heads,
        "intermediate_size": self.intermediate_size,
        "max_position_embeddings": self.max_position_embeddings,
        "type_vocab_size": self.type_vocab_size,
        "hidden_act": self.hidden_act,
        "layer_norm_eps": self.layer_norm_eps,
        "hidden_dropout_prob": self.hidden_dropout,
        "attention_probs_dropout_prob": self.attention_dropout,
        "initializer_range": self.initializer_range,
        "pad_token_id": self.pad_token_id,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": True,  # the MLM decoder is the word embeddings, as here
        "num_labels": self.num_labels,
        "problem_type": self.problem_type,
        "id2label": {str(i): n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
    }


def hf_head(d: dict[str, Any]) -> str:
  """The head kind a HF config.json's `architectures` names; "sequence" for the rest (a bare
  BertModel, BertForMaskedLM, ...), whose classifier then starts fresh as before."""
  archs = d.get("architectures") or ()
  for head, arch in HF_HEAD_ARCHITECTURES.items():
    if arch in archs:
      return head
  return "sequence"


def tiny_config(**overrides) -> BertConfig:
  """A few-thousand-parameter config for unit tests."""
  base = dict(vocab_size=128, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
              max_position_embeddings=64, type_vocab_size=2)
  base.update(overrides)
  return BertConfig(**base)
