"""Analytic model FLOPs of a distillation step: what MFU is measured against.

Counted the standard way (as in the PaLM / Megatron MFU papers): only matrix multiplications,
2 FLOPs per multiply-add. Softmax, LayerNorm, GELU, dropout, the embedding lookup and the
optimizer update are not counted: they are real work, but they are not "model FLOPs", so a
faster implementation of them shows up as higher MFU rather than as more FLOPs.

A train step is the student's forward and backward (backward = 2x forward: one matmul for the
input gradient, one for the weight gradient) plus the teacher's forward only.
"""

from __future__ import annotations

import dataclasses

from jaxdistill.models import BertConfig


@dataclasses.dataclass(frozen=True)
class StepFlops:
  student_forward: float   # one forward pass of the student over the batch
  teacher_forward: float
  train_step: float        # 3 x student forward + teacher forward

  def as_dict(self) -> dict:
    return dataclasses.asdict(self)


def layer_forward_flops(cfg: BertConfig, batch: int, seq: int) -> float:
  """One encoder layer: Q, K, V, output projections, the two FFN matmuls, and the two
  attention matmuls (Q K^T and P V), each 2 * batch * seq * seq * hidden."""
  h, i = cfg.hidden_size, cfg.intermediate_size
  tokens = batch * seq
  dense = 2 * tokens * (4 * h * h + 2 * h * i)
  attention = 2 * 2 * batch * seq * seq * h
  return float(dense + attention)


def head_forward_flops(cfg: BertConfig, batch: int) -> float:
  """Pooler (dense on [CLS]) and classifier."""
  h = cfg.hidden_size
  return float(2 * batch * (h * h + h * cfg.num_labels))


def forward_flops(cfg: BertConfig, batch: int, seq: int) -> float:
  return cfg.num_layers * layer_forward_flops(cfg, batch, seq) + head_forward_flops(cfg, batch)


def step_flops(student: BertConfig, teacher: BertConfig, batch: int, seq: int) -> StepFlops:
  s = forward_flops(student, batch, seq)
  t = forward_flops(teacher, batch, seq)
  return StepFlops(student_forward=s, teacher_forward=t, train_step=3 * s + t)


def xla_flops(compiled) -> float | None:
  """XLA's own FLOP count of a compiled program (`jax.jit(f).lower(...).compile()`), when the
  backend reports one. It counts every op (elementwise work included), so it sits above the
  analytic matmul count; printed next to it as a cross-check, never used for MFU."""
  try:
    analysis = compiled.cost_analysis()
  except Exception:  # noqa: BLE001  (backends without cost analysis)
    return None
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0] if analysis else None
  if not analysis or "flops" not in analysis:
    return None
  return float(analysis["flops"])
