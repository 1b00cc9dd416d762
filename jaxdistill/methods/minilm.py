"""MiniLM v1 and MiniLMv2: self-attention distillation as loss terms.

MiniLM v1 (Wang et al., NeurIPS 2020) matches only the *last* Transformer layer's
self-attention, so the student's depth is free (no layer map):

    minilm_attention = 1/(A|x|) sum_a sum_t KL(A^T_{a,t} || A^S_{a,t})     attention distributions
    minilm_value     = 1/(A|x|) sum_a sum_t KL(VR^T_{a,t} || VR^S_{a,t})   VR = softmax(V V^T / sqrt(d_k))

Both are per attention head, so teacher and student need the same number of heads (head
sizes, hence widths, may differ). Different head counts are a one-line error that points at
MiniLMv2.

MiniLMv2 (Wang et al., Findings of ACL 2021) concatenates each model's heads back to its
hidden width H and re-splits Q, K and V into `minilm.relation_heads` relation heads of width
H/R, so the relation matrices are S x S per relation head whatever the head counts and widths:

    minilm_v2 = L_QQ + L_KK + L_VV,  each 1/(R|x|) sum_r sum_t KL(R^T_{r,t} || R^S_{r,t}),
                R_r = softmax(X_r X_r^T / sqrt(H/R))

Layers. The student's last layer is always the one trained (both papers). The teacher layer is
`minilm.teacher_layer`: a 1-based layer number, negative from the end (-1 = the last, as v1
does; MiniLMv2 recommends an upper-middle layer of large teachers, e.g. 21 of 24; for a
base-size or smaller teacher it uses the last).

The losses are the pure functions in jaxdistill/losses/relations.py (docs/losses.md); these
terms pick the layers, check the shapes against the config, and pass the padding mask and the
example weights. Attention is read as pre-softmax scores (`from_logits=True`): the log-softmax
of the scores is exact where log(probabilities) would underflow.
"""

from __future__ import annotations

import math

import jax

from jaxdistill import losses
from jaxdistill.models import Collect
from jaxdistill.train.term_types import Inputs, Term

CONFIG = {
    # MiniLMv2 relation heads R: each model's Q, K, V (concatenated over heads, width H) are
    # split into R heads of width H/R. R must divide both widths. 12 = the MiniLM teacher's
    # own head count, so on the teacher side the relation heads are its attention heads.
    "relation_heads": 12,
    # The teacher layer whose self-attention is the target: 1..L, or -L..-1 (-1 = last).
    "teacher_layer": -1,
}


def teacher_layer_index(teacher_layer: int, num_layers: int) -> int:
  """0-based index into the teacher's per-layer tuples for `minilm.teacher_layer`."""
  if not (1 <= teacher_layer <= num_layers or -num_layers <= teacher_layer <= -1):
    raise ValueError(f"minilm.teacher_layer={teacher_layer} is out of range for a {num_layers}-layer "
                     f"teacher; use 1..{num_layers} or -{num_layers}..-1 (-1 = the last layer)")
  return teacher_layer - 1 if teacher_layer > 0 else num_layers + teacher_layer


def _teacher_at(x: Inputs, per_layer: tuple) -> jax.Array:
  return per_layer[teacher_layer_index(int(x.config.minilm.teacher_layer), len(per_layer))]


def _check_equal_heads(term: str, student: jax.Array, teacher: jax.Array) -> None:
  # Shapes are static under jit, so this fails at trace time, before any step runs.
  s, t = student.shape[1], teacher.shape[1]
  if s != t:
    raise ValueError(f"losses.{term}: MiniLM v1 needs equal head counts (teacher {t} vs student "
                     f"{s}); use losses.minilm_v2 (MiniLMv2 relation heads, minilm.relation_heads) "
                     "instead")


def _attention(x: Inputs) -> jax.Array:
  s = x.student.attention_scores[-1]
  t = _teacher_at(x, x.teacher.attention_scores)
  _check_equal_heads("minilm_attention", s, t)
  return losses.minilm_attention_loss(s, t, x.batch["attention_mask"], from_logits=True,
                                      example_weight=x.batch["example_weight"])


def _value(x: Inputs) -> jax.Array:
  s = x.student.values[-1]
  t = _teacher_at(x, x.teacher.values)
  _check_equal_heads("minilm_value", s, t)
  return losses.minilm_value_relation_loss(s, t, x.batch["attention_mask"],
                                           example_weight=x.batch["example_weight"])


def _width(x: jax.Array) -> int:
  return x.shape[1] * x.shape[3]  # [B, N, S, D]: the heads concatenated


def _v2(x: Inputs) -> jax.Array:
  r = int(x.config.minilm.relation_heads)
  s_qkv = (x.student.queries[-1], x.student.keys[-1], x.student.values[-1])
  t_qkv = tuple(_teacher_at(x, part) for part in (x.teacher.queries, x.teacher.keys, x.teacher.values))
  hs, ht = _width(s_qkv[0]), _width(t_qkv[0])
  if r < 1 or hs % r or ht % r:
    raise ValueError(f"minilm.relation_heads={r} must divide both widths (teacher {ht}, student "
                     f"{hs}); use a common divisor, e.g. {math.gcd(hs, ht)}")
  return losses.minilm_v2_loss(s_qkv, t_qkv, x.batch["attention_mask"], num_relation_heads=r,
                               example_weight=x.batch["example_weight"])


# None of the terms reads the teacher's logits (reads_teacher_logits=False), so a teacher
# whose classifier never trained (the assistant of configs/minilm_ta.py) may teach them.
TERMS = {
    "minilm_attention": Term(
        _attention, student=Collect(attention_scores=True), teacher=Collect(attention_scores=True),
        reads_teacher_logits=False,
        doc="MiniLM v1: KL of the last layer's attention distributions (equal head counts)"),
    "minilm_value": Term(
        _value, student=Collect(qkv=True), teacher=Collect(qkv=True),
        reads_teacher_logits=False,
        doc="MiniLM v1: KL of the last layer's value relations softmax(VV^T/sqrt(d))"),
    "minilm_v2": Term(
        _v2, student=Collect(qkv=True), teacher=Collect(qkv=True),
        reads_teacher_logits=False,
        doc="MiniLMv2: Q-Q, K-K, V-V relation KL over minilm.relation_heads relation heads"),
}


# ---- Stages the configs chain (configs/minilm*.py) ------------------------------------------
MINILM_TERMS = tuple(TERMS)


def distil_stage(name: str, epochs: int, lr: float, **sets) -> dict:
  """A task-agnostic distillation stage: the MiniLM losses alone (no labels are read).

  Its classifier is never trained, so dev accuracy says nothing here: the last step is
  exported (select_best off) and no compression report is written."""
  return {"name": name, "set": {"train.epochs": epochs, "optim.lr": lr, "losses.hard_ce": 0.0,
                                "train.select_best": False, "report.compression": False, **sets}}


def finetune_stage(source: str, epochs: int, lr: float) -> dict:
  """Fine-tunes the distilled student `@stage:<source>` on the labels alone. The config's
  teacher stays named, only for the compression report (no loss reads it)."""
  return {"name": "finetune", "set": {
      "student.source": f"@stage:{source}", "student.init": "pretrained",
      "losses.hard_ce": 1.0, **{f"losses.{t}": 0.0 for t in MINILM_TERMS},
      "train.epochs": epochs, "optim.lr": lr}}
