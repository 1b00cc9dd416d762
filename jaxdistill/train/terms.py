"""Loss terms: the pieces a config composes into a method.

A config sets `losses.<term> = weight`; the train step sums `weight * term(inputs)` over the
terms with a non-zero weight. Each term declares which internals of the student and the
teacher it reads (so the forward passes keep only those) and, optionally, parameters of its
own (e.g. a width projection) that train with the student.

Adding a method means adding terms here, not writing a new trainer.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxdistill import losses
from jaxdistill.methods import METHOD_MODULES, lad, theseus
from jaxdistill.models import BertConfig, Collect
from jaxdistill.train.term_types import Inputs, Term  # noqa: F401  (re-exported)


def _weights(x: Inputs):
  return x.batch["example_weight"]


def _hard(x: Inputs):
  # Unlabelled rows (label -1 / NaN, e.g. augmented data) carry no hard loss.
  logits, labels = x.student.logits, x.batch["labels"]
  if x.student_cfg.problem_type == "regression":
    known = jnp.isfinite(labels)
    return losses.regression_mse_loss(logits[:, 0], jnp.where(known, labels, 0.0),
                                      example_weight=_weights(x) * known)
  known = labels >= 0
  return losses.cross_entropy_loss(logits, jnp.maximum(labels, 0),
                                   example_weight=_weights(x) * known)


def _classification_only(name: str, x: Inputs):
  if x.student_cfg.problem_type == "regression":
    raise ValueError(f"loss term {name!r} needs class logits but the task is regression; "
                     "use losses.logit_mse instead")


def _kd(x: Inputs):
  _classification_only("kd", x)
  return losses.kd_kl_loss(x.student.logits, x.teacher.logits, x.config.kd.temperature,
                           scale_by_t2=x.config.kd.t2_scaling, example_weight=_weights(x))


def _soft_ce(x: Inputs):
  _classification_only("soft_ce", x)
  return losses.soft_cross_entropy_loss(x.student.logits, x.teacher.logits,
                                        x.config.kd.temperature,
                                        scale_by_t2=x.config.kd.t2_scaling,
                                        example_weight=_weights(x))


def _logit_mse(x: Inputs):
  return losses.logit_mse_loss(x.student.logits, x.teacher.logits, example_weight=_weights(x))


def pkd_pairs(config, student_cfg: BertConfig, teacher_cfg: BertConfig) -> list[tuple[int, int]]:
  """(student, teacher) hidden-state indices (1 = first layer's output) for BERT-PKD."""
  pairs = losses.make_layer_map(config.pkd.layer_map, student_cfg.num_layers,
                                teacher_cfg.num_layers, pairs=list(config.pkd.pairs) or None)
  if not pairs:
    raise ValueError(f"pkd.layer_map={config.pkd.layer_map!r} pairs no layers of a "
                     f"{student_cfg.num_layers}-layer student with a {teacher_cfg.num_layers}-layer "
                     "teacher; use a deeper student, pkd.layer_map=uniform, or pkd.pairs")
  return pairs


def _init_projection(key, config, s: BertConfig, t: BertConfig):
  """A learned [H_s, H_t] map when widths differ (TinyBERT's W_h); none when they match."""
  if s.hidden_size == t.hidden_size:
    return {}
  scale = 1.0 / jnp.sqrt(s.hidden_size)
  return {"kernel": jax.random.normal(key, (s.hidden_size, t.hidden_size)) * scale,
          "bias": jnp.zeros((t.hidden_size,))}


def _pkd(x: Inputs):
  pairs = pkd_pairs(x.config, x.student_cfg, x.teacher_cfg)
  return losses.pkd_loss(x.student.hidden_states, x.teacher.hidden_states, pairs,
                         projection_kernel=x.aux.get("kernel"), projection_bias=x.aux.get("bias"),
                         example_weight=_weights(x))


TERMS: dict[str, Term] = {
    "hard_ce": Term(_hard, doc="cross-entropy to the labels (MSE for regression)"),
    "kd": Term(_kd, teacher=Collect(), doc="Hinton soft-target KL at temperature kd.temperature"),
    "soft_ce": Term(_soft_ce, teacher=Collect(), doc="soft-target cross-entropy form of kd"),
    "logit_mse": Term(_logit_mse, teacher=Collect(), doc="MSE between logits (Bucilua; Tang et al.)"),
    "pkd": Term(_pkd, student=Collect(hidden_states=True), teacher=Collect(hidden_states=True),
                init_aux=_init_projection, doc="BERT-PKD normalised [CLS] MSE over pkd.layer_map"),
    "lad": Term(lad.lad_loss, student=Collect(hidden_states=True), teacher=Collect(hidden_states=True),
                init_aux=lad.init_gates, doc="LAD: MSE to gated aggregates of the teacher's layers"),
}
# Each method module's own terms (jaxdistill/methods/*.py: TERMS).
for _module in METHOD_MODULES:
  for _name, _term in getattr(_module, "TERMS", {}).items():
    if _name in TERMS:
      raise ValueError(f"loss term {_name!r} of {_module.__name__} is already registered")
    TERMS[_name] = _term


def active_terms(config) -> dict[str, tuple[float, Term]]:
  out = {name: (float(w), TERMS[name]) for name, w in config.losses.items() if float(w) != 0.0}
  if not out:
    raise ValueError("every loss weight is 0; set at least one, e.g. --config.losses.hard_ce=1")
  return out


def needs_teacher_outputs(config) -> bool:
  """Whether a loss term reads the teacher's forward pass."""
  return any(t.teacher is not None for _, t in active_terms(config).values())


def teacher_logits_suffice(config) -> bool:
  """Whether every term that reads the teacher reads only its logits (so they can be cached)."""
  teacher_terms = [t for _, t in active_terms(config).values() if t.teacher is not None]
  return bool(teacher_terms) and all(t.teacher == Collect() for t in teacher_terms) \
      and not theseus.enabled(config)


def needs_teacher(config) -> bool:
  """Whether the run needs a teacher checkpoint (BERT-of-Theseus: as the predecessor)."""
  return needs_teacher_outputs(config) or theseus.enabled(config)


def collect_for(config) -> tuple[Collect, Collect]:
  s, t = Collect(), Collect()
  for _, term in active_terms(config).values():
    s = s | term.student
    if term.teacher is not None:
      t = t | term.teacher
  return s, t


def init_aux(key, config, student_cfg, teacher_cfg) -> dict:
  aux = {}
  for i, (name, (_, term)) in enumerate(sorted(active_terms(config).items())):
    if term.init_aux is not None:
      aux[name] = term.init_aux(jax.random.fold_in(key, i), config, student_cfg, teacher_cfg)
  return aux


def prepare_batch(batch: dict, key, config, student_cfg) -> dict:
  """Applies the active terms' `prepare` hooks (e.g. MLM masking) in name order."""
  for i, (name, (_, term)) in enumerate(sorted(active_terms(config).items())):
    if term.prepare is not None:
      batch = term.prepare(batch, jax.random.fold_in(key, PREPARE_STREAM + i), config, student_cfg)
  return batch


PREPARE_STREAM = 30_000  # fold_in tags of the prepare hooks' keys (dropout uses 0..L, 10_000)


def total_loss(inputs_by_term: Callable[[str], Inputs], config) -> tuple[jax.Array, dict]:
  """Weighted sum of the active terms; also returns each term's value for logging."""
  parts = {}
  total = jnp.zeros((), jnp.float32)
  for name, (weight, term) in active_terms(config).items():
    value = term.fn(inputs_by_term(name))
    parts[name] = value
    total = total + weight * value
  return total, parts
