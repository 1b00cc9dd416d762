"""MobileBERT (Sun et al., ACL 2020): layer-to-layer knowledge transfer into a bottleneck student
(jaxdistill/models/mobilebert.py), as loss terms the trainer weights in `config.losses`:

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

import jax.numpy as jnp

from jaxdistill import losses
from jaxdistill.models import Collect
from jaxdistill.train.term_types import Inputs, Term

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


def layer_pairs(config, student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
  """(student, teacher) 0-based layer pairs the transfer terms compare."""
  m = config.mobilebert
  if m.teacher_layers:
    pairs = list(enumerate(m.teacher_layers))
    if len(pairs) != student_layers or not all(0 <= t < teacher_layers for _, t in pairs):
      raise ValueError(f"mobilebert.teacher_layers={tuple(m.teacher_layers)} must give one teacher "
                       f"layer in 0..{teacher_layers - 1} for each of the {student_layers} "
                       "student layers")
  elif student_layers > teacher_layers:
    raise ValueError(f"a {student_layers}-layer MobileBERT student has no layer map to a "
                     f"{teacher_layers}-layer teacher; set mobilebert.num_layers <= {teacher_layers}")
  else:
    pairs = [(i, (i + 1) * teacher_layers // student_layers - 1) for i in range(student_layers)]
  if m.transfer_layer >= 0:
    if m.transfer_layer >= student_layers:
      raise ValueError(f"mobilebert.transfer_layer={m.transfer_layer} but the student has "
                       f"{student_layers} layers (0..{student_layers - 1})")
    pairs = [pairs[m.transfer_layer]]
  return pairs


def _over_layers(x: Inputs, field: str, loss_fn, **kw):
  s_all, t_all = getattr(x.student, field), getattr(x.teacher, field)
  offset = 1 if field == "hidden_states" else 0  # hidden_states[0] is the embedding output
  n_s, n_t = len(s_all) - offset, len(t_all) - offset
  per_layer = [loss_fn(s_all[i + offset], t_all[j + offset], x.batch["attention_mask"],
                       example_weight=x.batch["example_weight"], **kw)
               for i, j in layer_pairs(x.config, n_s, n_t)]
  return jnp.mean(jnp.stack(per_layer))


def _feature_map(x: Inputs):
  if x.student_cfg.hidden_size != x.teacher_cfg.hidden_size:
    raise ValueError(f"MobileBERT feature-map transfer compares widths one to one, but the student's "
                     f"inter-block width is {x.student_cfg.hidden_size} and the teacher's "
                     f"{x.teacher_cfg.hidden_size}; set mobilebert.hidden_size=0 (the teacher's)")
  return _over_layers(x, "hidden_states", losses.mobilebert_feature_map_loss,
                      epsilon=x.config.mobilebert.feature_map_epsilon)


def _mean(x: Inputs):
  return _over_layers(x, "hidden_states", losses.mobilebert_mean_loss,
                      penalty=x.config.mobilebert.mean_penalty)


def _variance(x: Inputs):
  return _over_layers(x, "hidden_states", losses.mobilebert_variance_loss)


def _attention(x: Inputs):
  if x.student_cfg.num_heads != x.teacher_cfg.num_heads:
    raise ValueError(f"MobileBERT attention transfer needs equal head counts (teacher "
                     f"{x.teacher_cfg.num_heads} vs student {x.student_cfg.num_heads}); set "
                     "mobilebert.num_heads=0 (the teacher's)")
  return _over_layers(x, "attention_probs", losses.mobilebert_attention_loss)


_HIDDEN = Collect(hidden_states=True)
_PROBS = Collect(attention_probs=True)
TERMS = {
    "mobilebert_feature_map": Term(_feature_map, student=_HIDDEN, teacher=_HIDDEN,
                                   doc="MobileBERT feature-map transfer (normalised MSE per layer)"),
    "mobilebert_mean": Term(_mean, student=_HIDDEN, teacher=_HIDDEN,
                            doc="MobileBERT per-token mean discrepancy per layer"),
    "mobilebert_variance": Term(_variance, student=_HIDDEN, teacher=_HIDDEN,
                                doc="MobileBERT per-token variance discrepancy per layer"),
    "mobilebert_attention": Term(_attention, student=_PROBS, teacher=_PROBS,
                                 doc="MobileBERT attention transfer (KL per head and layer)"),
}
