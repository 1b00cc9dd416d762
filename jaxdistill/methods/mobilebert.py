"""MobileBERT (Sun et al., ACL 2020): layer-to-layer knowledge transfer into a bottleneck student
(jaxdistill/models/mobilebert.py), as loss terms the composite method weights in `config.losses`, and how
`student.arch=mobilebert` builds the student from `config.mobilebert`:

  mobilebert_feature_map  mean_h (LN(H_t) - LN(H_s))^2 per real token (FMT, parameter-free LN)
  mobilebert_mean         the per-token mean discrepancy (mobilebert.mean_penalty: "squared" as
                          the TF Model Garden code's "beta" loss, or "abs")
  mobilebert_variance     |var_h(H_t) - var_h(H_s)| per token (its "gamma" loss)
  mobilebert_attention    KL(teacher || student) of the attention distributions, per head and
                          real query (AT)

Layer map: student layer i (0-based) is matched to teacher layer `mobilebert.teacher_layers[i]`,
by default (i+1)*T/S - 1, the same layer when the depths are equal (MobileBERT's student is
as deep as its teacher). Hidden states are compared at index i+1; the embedding outputs
(index 0) are not compared: the student's embeddings start as a copy of the teacher's.
`mobilebert.transfer_layer = l` restricts every term to layer l, which is how progressive
knowledge transfer trains one block per stage (configs/mobilebert.py: stage l trains only
`student/layers/l/` through optim.train_only, the blocks below stay as the previous stage
left them); -1 averages over all layers (joint knowledge transfer).

Loss weights, after the TF Model Garden implementation (LayerWiseDistillConfig): feature map
100, mean 5000 (squared), variance 5, attention 1.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import ClassVar

import jax.numpy as jnp

from jaxdistill import losses
from jaxdistill.core.outputs import Collect
from jaxdistill.methods.base import Inputs, Term, register, register_student_arch, register_term
from jaxdistill.methods.distill import Distill
from jaxdistill.models import hub, registry
from jaxdistill.models import mobilebert as mb
from jaxdistill.models.config import BertConfig

log = logging.getLogger(__name__)

CONFIG = dict(
    # The student (models/mobilebert.py); 0 = the source checkpoint's value.
    hidden_size=0,          # inter-block width; must equal the teacher's for FMT
    intra_size=96,          # intra-block width: 384 / 4 as the paper's 512 / 128; divisible by 12 heads
    num_layers=0,           # configs/mobilebert.py sets it: its stage list depends on it
    num_heads=0,            # the teacher's (AT compares heads one to one)
    num_ffn=4,              # stacked FFNs per block, as the paper
    intermediate_size=384,  # 4 x intra_size, as the paper's 512 for 128
    embedding_size=0,       # > 0: the paper's 3-gram embedding compression to this width
    key_query_shared_bottleneck=True,
    normalization="layer_norm",  # or "no_norm" (the paper's NoNorm)
    hidden_act="",          # "" = the source's
    copy_embeddings=True,   # start from the BERT source's embeddings (same width)
    copy_head=True,         # and from its pooler and classifier
    # The transfer losses.
    transfer_layer=-1,      # -1: every layer; l: student layer l only (a progressive stage)
    teacher_layers=(),      # 0-based teacher layer per student layer; () = uniform
    mean_penalty="squared",
    feature_map_epsilon=1e-5,
)


def layer_pairs(teacher_layers_map: tuple, transfer_layer: int, student_layers: int,
                teacher_layers: int) -> list[tuple[int, int]]:
  """(student, teacher) 0-based layer pairs the transfer terms compare."""
  if teacher_layers_map:
    pairs = list(enumerate(teacher_layers_map))
    if len(pairs) != student_layers or not all(0 <= t < teacher_layers for _, t in pairs):
      raise ValueError(f"mobilebert.teacher_layers={tuple(teacher_layers_map)} must give one teacher "
                       f"layer in 0..{teacher_layers - 1} for each of the {student_layers} "
                       "student layers")
  elif student_layers > teacher_layers:
    raise ValueError(f"a {student_layers}-layer MobileBERT student has no layer map to a "
                     f"{teacher_layers}-layer teacher; set mobilebert.num_layers <= {teacher_layers}")
  else:
    pairs = [(i, (i + 1) * teacher_layers // student_layers - 1) for i in range(student_layers)]
  if transfer_layer >= 0:
    if transfer_layer >= student_layers:
      raise ValueError(f"mobilebert.transfer_layer={transfer_layer} but the student has "
                       f"{student_layers} layers (0..{student_layers - 1})")
    pairs = [pairs[transfer_layer]]
  return pairs


_HIDDEN = Collect(hidden_states=True)
_PROBS = Collect(attention_probs=True)


@dataclasses.dataclass(frozen=True)
class _Transfer(Term):
  teacher_layers: tuple = ()
  transfer_layer: int = -1
  field: ClassVar[str] = "hidden_states"
  student = _HIDDEN
  teacher = _HIDDEN

  @classmethod
  def from_config(cls, config):
    m = config.mobilebert
    return cls(tuple(int(t) for t in m.teacher_layers), int(m.transfer_layer), **cls.extra(m))

  @classmethod
  def extra(cls, m) -> dict:
    return {}

  def over_layers(self, x: Inputs, loss_fn, **kw):
    s_all, t_all = getattr(x.student, self.field), getattr(x.teacher, self.field)
    offset = 1 if self.field == "hidden_states" else 0  # hidden_states[0]: the embedding output
    n_s, n_t = len(s_all) - offset, len(t_all) - offset
    per_layer = [loss_fn(s_all[i + offset], t_all[j + offset], x.batch["attention_mask"],
                         example_weight=x.batch["example_weight"], **kw)
                 for i, j in layer_pairs(self.teacher_layers, self.transfer_layer, n_s, n_t)]
    return jnp.mean(jnp.stack(per_layer))


@register_term("mobilebert_feature_map")
@dataclasses.dataclass(frozen=True)
class FeatureMap(_Transfer):
  epsilon: float = 1e-5
  doc = "MobileBERT feature-map transfer (normalised MSE per layer)"

  @classmethod
  def extra(cls, m) -> dict:
    return {"epsilon": float(m.feature_map_epsilon)}

  def __call__(self, x: Inputs):
    if x.student_cfg.hidden_size != x.teacher_cfg.hidden_size:
      raise ValueError(f"MobileBERT feature-map transfer compares widths one to one, but the student's "
                       f"inter-block width is {x.student_cfg.hidden_size} and the teacher's "
                       f"{x.teacher_cfg.hidden_size}; set mobilebert.hidden_size=0 (the teacher's)")
    return self.over_layers(x, losses.mobilebert_feature_map_loss, epsilon=self.epsilon)


@register_term("mobilebert_mean")
@dataclasses.dataclass(frozen=True)
class Mean(_Transfer):
  penalty: str = "squared"
  doc = "MobileBERT per-token mean discrepancy per layer"

  @classmethod
  def extra(cls, m) -> dict:
    return {"penalty": str(m.mean_penalty)}

  def __call__(self, x: Inputs):
    return self.over_layers(x, losses.mobilebert_mean_loss, penalty=self.penalty)


@register_term("mobilebert_variance")
@dataclasses.dataclass(frozen=True)
class Variance(_Transfer):
  doc = "MobileBERT per-token variance discrepancy per layer"

  def __call__(self, x: Inputs):
    return self.over_layers(x, losses.mobilebert_variance_loss)


@register_term("mobilebert_attention")
@dataclasses.dataclass(frozen=True)
class AttentionTransfer(_Transfer):
  doc = "MobileBERT attention transfer (KL per head and layer)"
  field: ClassVar[str] = "attention_probs"
  student = _PROBS
  teacher = _PROBS

  def __call__(self, x: Inputs):
    if x.student_cfg.num_heads != x.teacher_cfg.num_heads:
      raise ValueError(f"MobileBERT attention transfer needs equal head counts (teacher "
                       f"{x.teacher_cfg.num_heads} vs student {x.student_cfg.num_heads}); set "
                       "mobilebert.num_heads=0 (the teacher's)")
    return self.over_layers(x, losses.mobilebert_attention_loss)


register("mobilebert")(Distill)  # the recipe's label: the composite method runs its terms


# ---- The student: config.mobilebert -> MobileBertConfig (models/mobilebert.py) ---------------
def student_config(config, bert: BertConfig) -> mb.MobileBertConfig:
  """config.mobilebert.* with 0 / "" = the BERT source's value; its head as loaded."""
  m = config.mobilebert
  return mb.MobileBertConfig(
      vocab_size=bert.vocab_size, hidden_size=m.hidden_size or bert.hidden_size,
      intra_size=m.intra_size, num_layers=m.num_layers or bert.num_layers,
      num_heads=m.num_heads or bert.num_heads, num_ffn=m.num_ffn,
      intermediate_size=m.intermediate_size, embedding_size=m.embedding_size,
      key_query_shared_bottleneck=m.key_query_shared_bottleneck, normalization=m.normalization,
      max_position_embeddings=bert.max_position_embeddings, type_vocab_size=bert.type_vocab_size,
      hidden_act=m.hidden_act or bert.hidden_act, pad_token_id=bert.pad_token_id,
      num_labels=bert.num_labels, problem_type=bert.problem_type, label_names=bert.label_names,
      dtype=config.train.dtype)


def copied_from_bert(cfg: mb.MobileBertConfig, bert_params: dict, bert_fresh: list[str], config) -> dict:
  """What a MobileBERT as wide as a BERT checkpoint starts from: its embeddings (the TF Model
  Garden's progressive distillation copies the teacher's) and, with mobilebert.copy_head,
  its pooler and trained classifier."""
  m, out = config.mobilebert, {}
  if m.copy_embeddings:
    e = bert_params["embeddings"]
    out["embeddings"] = {k: e[k] for k in ("position", "token_type")}
    if cfg.embedding_size == 0:
      out["embeddings"]["word"] = e["word"]
    if cfg.normalization == "layer_norm":  # a LayerNorm's affine means nothing to NoNorm
      out["embeddings"]["norm"] = e["norm"]
  if m.copy_head:
    out["pooler"] = bert_params["pooler"]
    if not any(f.startswith("classifier") for f in bert_fresh):
      out["classifier"] = bert_params["classifier"]
  return out


@register_student_arch("mobilebert")
def build_student(config, task, source: str, head: dict):
  """A MobileBERT student: loaded when `source` is a MobileBERT export (a previous stage),
  else random from config.mobilebert.* with the BERT source's embeddings (and head) copied."""
  model_dir = hub.resolve_model_dir(source)
  hf = hub.read_hf_config(model_dir)
  if registry.arch_of_checkpoint(hf) == "mobilebert":
    model, fresh = mb.load(model_dir, hf, seed=config.seed, head=head, dtype=config.train.dtype)
    return model.config, hub.params_of(model), fresh
  bert, bert_fresh = hub.load_pretrained(str(model_dir), seed=config.seed, **head)
  cfg = student_config(config, bert.config)
  if (config.mobilebert.copy_embeddings or config.mobilebert.copy_head) and \
      cfg.hidden_size != bert.config.hidden_size:
    raise ValueError(f"mobilebert.hidden_size={cfg.hidden_size} differs from the source's "
                     f"{bert.config.hidden_size}; set mobilebert.copy_embeddings=False and "
                     "mobilebert.copy_head=False, or keep hidden_size=0 (the source's width)")
  copied = copied_from_bert(cfg, hub.params_of(bert), bert_fresh, config)
  model, fresh = mb.fill_fresh(cfg, copied, mb.abstract_model(cfg, config.seed), config.seed)
  log.info("mobilebert student: %d layers, %d -> %d -> %d wide; copied from %s: %s",
           cfg.num_layers, cfg.hidden_size, cfg.intra_size, cfg.hidden_size, source,
           ", ".join(sorted(copied)) or "nothing")
  return cfg, hub.params_of(model), fresh
