"""The PyTorch reference: the same distillation step a user would write with transformers.

`BertForSequenceClassification` (eager attention, so `output_attentions` returns the attention
maps; SDPA cannot), `output_hidden_states`, the same four losses and the same optimizer work as
jaxdistill's step: global-norm clipping at 1.0, AdamW (fused when this torch build supports it
on the device, else foreach) with weight decay on >= 2-D weights only, a scheduled learning
rate. Both sides start from the same weights (jaxdistill's, converted by hf_convert), so they
compute the same function. Threads: `torch.set_num_threads(cores)`.

One difference, stated rather than hidden: transformers returns the attention *probabilities*
(after softmax), not TinyBERT's pre-softmax scores, so the attention MSE here reads the
probabilities. The work is identical (one [B, N, S, S] tensor per pair, same reductions).

Inference is timed with the fastest stock path (SDPA attention, `torch.inference_mode`), not
with the eager attention training needs, so the teacher/student and framework comparisons are
against PyTorch at its best.

torch is a benchmark-only dependency: jaxdistill itself never imports it.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Callable, Optional

import numpy as np

from jaxdistill.models import BertConfig
from jaxdistill.models.hf_convert import to_hf_state


def import_torch():
  try:
    import torch
    import transformers
  except ImportError as e:
    raise SystemExit(f"the PyTorch side needs torch and transformers ({e.name} is missing): "
                     "pip install torch transformers, or run with --frameworks jax") from None
  return torch, transformers


def cores() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def device_name(platform: str) -> str:
  torch, _ = import_torch()
  return "cuda" if platform == "gpu" and torch.cuda.is_available() else "cpu"


def hf_model(cfg: BertConfig, params: dict, attn: str, device: str):
  torch, transformers = import_torch()
  hf_cfg = transformers.BertConfig(**{k: v for k, v in cfg.to_hf_dict().items()
                                      if k not in ("architectures",)}, attn_implementation=attn)
  model = transformers.BertForSequenceClassification(hf_cfg)
  state = {k: torch.from_numpy(np.array(v, np.float32)) for k, v in to_hf_state(cfg, params).items()}
  missing, unexpected = model.load_state_dict(state, strict=False)
  if unexpected or any("position_ids" not in k for k in missing):
    raise RuntimeError(f"weight conversion mismatch: missing {missing}, unexpected {unexpected}")
  return model.to(device)


def make_optimizer(model, lr: float = 5e-5, weight_decay: float = 0.01):
  torch, _ = import_torch()
  decay = [p for p in model.parameters() if p.ndim > 1]
  no_decay = [p for p in model.parameters() if p.ndim <= 1]
  groups = [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]
  device = next(model.parameters()).device
  try:
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)
    kind = "fused"
    # Some builds accept fused=True and only fail at the first step on an unsupported device.
    probe = torch.zeros(1, device=device, requires_grad=True)
    probe_opt = torch.optim.AdamW([probe], fused=True)
    probe.grad = torch.zeros_like(probe)
    probe_opt.step()
  except (RuntimeError, TypeError):
    opt = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, foreach=True)
    kind = "foreach"
  # Warmup then linear decay, as jaxdistill's schedule (its cost is a few scalar ops either way).
  sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10_000))
  return opt, sched, kind


@dataclasses.dataclass
class TorchBench:
  train: Callable[[int], float]
  infer_teacher: Optional[Callable[[int], float]]  # None when built without inference
  infer_student: Optional[Callable[[int], float]]
  first_step_s: float      # eager has no compile; its first step pays allocation and warm-up
  optimizer: str
  threads: int
  loss: Callable[[], float]
  device: str


def build(student: BertConfig, teacher: BertConfig, params: tuple[dict, dict], batch: dict,
          dtype: str, platform: str, temperature: float = 2.0, inference: bool = True
          ) -> TorchBench:
  torch, _ = import_torch()
  F = torch.nn.functional
  threads = cores()
  torch.set_num_threads(threads)
  device = device_name(platform)
  s_params, t_params = params
  s_model = hf_model(student, s_params, "eager", device).train()
  t_model = hf_model(teacher, t_params, "eager", device).eval()
  for p in t_model.parameters():
    p.requires_grad_(False)
  opt, sched, opt_kind = make_optimizer(s_model)
  ids, mask, types, labels = (torch.from_numpy(np.asarray(batch[k])).to(device).long() for k in
                              ("input_ids", "attention_mask", "token_type_ids", "labels"))
  k = teacher.num_layers // student.num_layers
  autocast = (torch.autocast(device_type=device, dtype=torch.bfloat16) if dtype == "bfloat16"
              else torch.autocast(device_type=device, enabled=False))
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  holder = {"loss": None}

  def one_step():
    with autocast:
      with torch.no_grad():
        t = t_model(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True,
                    output_attentions=True)
      s = s_model(ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True,
                  output_attentions=True)
      s_logits, t_logits = s.logits.float(), t.logits.float()
      loss = F.cross_entropy(s_logits, labels)
      loss = loss + temperature ** 2 * F.kl_div(
          F.log_softmax(s_logits / temperature, -1), F.log_softmax(t_logits / temperature, -1),
          reduction="batchmean", log_target=True)
      for m in range(1, student.num_layers + 1):  # TinyBERT's uniform map g(m) = m * L_t / L_s
        loss = loss + F.mse_loss(s.hidden_states[m].float(), t.hidden_states[m * k].float())
        loss = loss + F.mse_loss(s.attentions[m - 1].float(), t.attentions[m * k - 1].float())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(s_model.parameters(), 1.0)
    opt.step()
    sched.step()
    opt.zero_grad(set_to_none=True)
    return loss

  def train(n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
      loss = one_step()
    sync()
    holder["loss"] = loss.detach()
    return time.perf_counter() - t0

  t0 = time.perf_counter()
  train(1)
  first_step_s = time.perf_counter() - t0

  def infer_timer(cfg, p):
    if not inference:  # the memory probe builds the train step alone
      return None
    model = hf_model(cfg, p, "sdpa", device).eval()
    if dtype == "bfloat16":
      model = model.to(torch.bfloat16)

    def run(n: int) -> float:
      t0 = time.perf_counter()
      with torch.inference_mode():
        for _ in range(n):
          model(ids, attention_mask=mask, token_type_ids=types).logits
      sync()
      return time.perf_counter() - t0
    run(1)
    return run

  return TorchBench(train=train, infer_teacher=infer_timer(teacher, t_params),
                    infer_student=infer_timer(student, s_params), first_step_s=first_step_s,
                    optimizer=opt_kind, threads=threads, loss=lambda: float(holder["loss"]),
                    device=device)


def device_peak_bytes(device: str) -> int | None:
  torch, _ = import_torch()
  return int(torch.cuda.max_memory_allocated()) if device == "cuda" else None
