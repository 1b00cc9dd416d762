"""TinyBERT (Jiao et al., Findings of EMNLP 2020): the loss terms, the config section and the
data-augmentation stage.

Task-specific TinyBERT distillation runs in two steps (configs/tinybert.py):
1. intermediate-layer distillation on the (augmented) task data,

       tinybert_embedding = MSE(E_s W_e, E_t)                  (embedding outputs)
       tinybert_hidden    = sum_m MSE(H_s^m W_h, H_t^g(m))       m = 1..M
       tinybert_attention = sum_m MSE(A_s^m, A_t^g(m))           pre-softmax scores

2. prediction-layer distillation, tinybert_prediction = soft cross-entropy
   -sum_c softmax(z_t / T) log softmax(z_s / T) (no T^2; the paper's T = 1).

Layer map g(m) = m * L / M (`losses.make_layer_map("uniform")`: floor(m * L / M), so a
4-layer student of a 6-layer teacher reads teacher layers 1, 3, 4, 6; `tinybert.layer_map`
and `tinybert.pairs` pick another map). The attention term pairs the same layers (attention
tuples have no embedding entry, so index m - 1 is layer m) and needs equal head counts.

W_h [H_s, H_t] (one matrix shared by every layer pair, as the paper's single W_h and the
authors' `fit_dense`) and W_e (the embeddings' own, as in the paper) are the terms' own
parameters (init_aux, trained at optim.aux_lr); they exist only when the widths differ.
Each MSE averages over the teacher width and the real tokens (jaxdistill.losses); the
per-layer values are summed over the layer pairs, as the authors' code sums rep_loss and
att_loss over layers.

The paper's data augmentation (Algorithm 1) is the stage kind `tinybert_augment`
(jaxdistill/data/augment_tinybert.py): it writes <stage dir>/train_augmented.jsonl, which
later stages read through data.train_override.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
import jax.numpy as jnp

from jaxdistill import losses
from jaxdistill.data import augment_tinybert
from jaxdistill.core.outputs import Collect
from jaxdistill.methods.kd import task_view
from jaxdistill.methods.base import Inputs, Term, register, register_stage_kind, register_term
from jaxdistill.methods.distill import Distill
from jaxdistill.models import BertConfig

# Defaults of config.tinybert. The augmentation defaults are the paper's (N_a = 20 for SST-2
# in the authors' script, p_t = 0.4, K = 15); configs/tinybert.py scales N_a to its budget.
CONFIG = dict(
    temperature=1.0,       # prediction-layer soft cross-entropy temperature (paper: 1)
    layer_map="uniform",   # uniform | skip | last | explicit (losses.make_layer_map)
    pairs=(),              # (student_layer, teacher_layer) pairs for layer_map="explicit"
    augment_model="",      # checkpoint with a masked-LM head (e.g. "@stage:mlm_head")
    augment_n=20,          # N_a: augmented sentences per training example (duplicates dropped)
    augment_p=0.4,         # p_t: probability of replacing each eligible word
    augment_k=15,          # K: candidates per word (MLM top-K / embedding neighbours)
    augment_seed=0,        # the same seed writes a byte-identical file
    augment_examples=0,    # augment only the first N training examples (0 = all); all are kept
    augment_batch_size=64,  # sequences per jitted masked-LM forward pass
)


def layer_pairs(layer_map: str, explicit: tuple, s: BertConfig, t: BertConfig) -> list[tuple[int, int]]:
  """(student, teacher) hidden-state indices (1 = first layer's output) of the hidden and
  attention terms; the embedding term is the (0, 0) pair on its own."""
  pairs = losses.make_layer_map(layer_map, s.num_layers, t.num_layers,
                                pairs=[tuple(p) for p in explicit] if layer_map == "explicit" else None)
  pairs = [(i, j) for i, j in pairs if i > 0 and j > 0]  # embeddings: tinybert_embedding's job
  if not pairs:
    raise ValueError(f"tinybert.layer_map={layer_map!r} pairs no layers of a {s.num_layers}-layer "
                     f"student with a {t.num_layers}-layer teacher; use tinybert.layer_map=uniform")
  return pairs


def _projection(key, s_width: int, t_width: int) -> dict:
  """A learned [H_s, H_t] map (+ bias) when the widths differ; none when they match."""
  if s_width == t_width:
    return {}
  return {"kernel": jax.random.normal(key, (s_width, t_width)) / jnp.sqrt(s_width),
          "bias": jnp.zeros((t_width,))}


def _check_heads(s: BertConfig, t: BertConfig) -> None:
  if s.num_heads != t.num_heads:
    raise ValueError(f"tinybert_attention needs equal head counts (teacher {t.num_heads}, student "
                     f"{s.num_heads}); set student.num_heads={t.num_heads} or use minilm_v2 relations")


def _mask(x: Inputs):
  return x.batch["attention_mask"]


_HIDDEN = Collect(hidden_states=True)
_SCORES = Collect(attention_scores=True)


@dataclasses.dataclass(frozen=True)
class _Intermediate(Term):
  """The intermediate terms: they read the teacher's encoder, not its task head."""
  layer_map: str = "uniform"
  pairs: tuple = ()
  reads_teacher_logits = False

  @classmethod
  def from_config(cls, config):
    tb = config.tinybert
    return cls(str(tb.layer_map), tuple(tuple(p) for p in tb.pairs))

  def layer_pairs(self, s, t):
    return layer_pairs(self.layer_map, self.pairs, s, t)


@register_term("tinybert_embedding")
@dataclasses.dataclass(frozen=True)
class Embedding(_Intermediate):
  doc = "TinyBERT: MSE between embedding outputs through W_e"
  student = _HIDDEN
  teacher = _HIDDEN

  def init_params(self, key, s, t) -> dict:
    return _projection(key, s.hidden_size, t.hidden_size)  # W_e, separate from W_h

  def __call__(self, x: Inputs) -> jax.Array:
    return losses.tinybert_embedding_loss(
        x.student.hidden_states[0], x.teacher.hidden_states[0], _mask(x),
        projection_kernel=x.aux.get("kernel"), projection_bias=x.aux.get("bias"),
        example_weight=x.batch["example_weight"])


@register_term("tinybert_hidden")
@dataclasses.dataclass(frozen=True)
class Hidden(_Intermediate):
  doc = "TinyBERT: MSE between layer outputs through W_h over tinybert.layer_map"
  student = _HIDDEN
  teacher = _HIDDEN

  def init_params(self, key, s, t) -> dict:
    self.layer_pairs(s, t)  # a bad layer map fails at setup, not at the first step
    return _projection(key, s.hidden_size, t.hidden_size)  # W_h

  def __call__(self, x: Inputs) -> jax.Array:
    return losses.sum_over_layer_pairs(
        losses.tinybert_hidden_loss, x.student.hidden_states, x.teacher.hidden_states,
        self.layer_pairs(x.student_cfg, x.teacher_cfg),
        what="tinybert_hidden pair", index_name="hidden-state index", attention_mask=_mask(x),
        projection_kernel=x.aux.get("kernel"), projection_bias=x.aux.get("bias"),
        example_weight=x.batch["example_weight"])


@register_term("tinybert_attention")
@dataclasses.dataclass(frozen=True)
class Attention(_Intermediate):
  doc = "TinyBERT: MSE between pre-softmax attention scores"
  student = _SCORES
  teacher = _SCORES

  def init_params(self, key, s, t) -> dict:
    _check_heads(s, t)  # checked at setup so the run fails before any training
    self.layer_pairs(s, t)
    return {}

  def __call__(self, x: Inputs) -> jax.Array:
    _check_heads(x.student_cfg, x.teacher_cfg)
    # Attention tuples start at layer 1: layer m is index m - 1.
    pairs = [(i - 1, j - 1) for i, j in self.layer_pairs(x.student_cfg, x.teacher_cfg)]
    return losses.sum_over_layer_pairs(
        losses.tinybert_attention_loss, x.student.attention_scores, x.teacher.attention_scores,
        pairs, what="tinybert_attention pair", index_name="attention layer index",
        attention_mask=_mask(x), example_weight=x.batch["example_weight"])


@register_term("tinybert_prediction")
@dataclasses.dataclass(frozen=True)
class Prediction(Term):
  temperature: float = 1.0
  doc = "TinyBERT: soft cross-entropy at tinybert.temperature"
  teacher = Collect()

  @classmethod
  def from_config(cls, config):
    return cls(float(config.tinybert.temperature))

  def __call__(self, x: Inputs) -> jax.Array:
    if x.student_cfg.problem_type == "regression":
      raise ValueError("tinybert_prediction needs class logits but the task is regression; "
                       "use losses.logit_mse (TinyBERT's own choice for STS-B) instead")
    # Token and span heads: the same rows as kd (methods/kd.py task_view).
    (zs, mask), (zt, _) = task_view(x.student.logits, x), task_view(x.teacher.logits, x)
    return losses.tinybert_prediction_loss(zs, zt, self.temperature, mask=mask,
                                           example_weight=x.batch["example_weight"])


@register_stage_kind("tinybert_augment")
def augment_stage(config, workdir: Path) -> str:
  """Stage kind `tinybert_augment`: writes workdir/train_augmented.jsonl (once)."""
  return str(augment_tinybert.run_augment_stage(config, Path(workdir)))


register("tinybert")(Distill)  # the recipe's label: the composite method runs its terms
