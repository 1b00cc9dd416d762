"""The loss terms of the whole-run benchmark's PyTorch side: jaxdistill's formulas in torch.

Each function restates one term of jaxdistill/methods (and the pure function in
jaxdistill/losses it calls) for transformers' outputs; tests/test_bench_run.py checks each
against jaxdistill's own loss on the same weights and batch. Padding never counts: the
torch batch is padded to its longest row, jaxdistill's to a bucket, and both mask it.

    hard_ce            CE(z_s, y)
    kd                 T^2 * KL(softmax(z_t/T) || softmax(z_s/T))            (t2_scaling)
    pkd                sum_pairs || h_s[CLS]/|h_s[CLS]| - h_t[CLS]/|h_t[CLS]| ||^2
    lad                1/n sum_j mean_real_tokens mean_h (s_j - a_{k j})^2, a = gated
                       aggregates of the teacher's layers (methods/lad.py)
    minilm_attention   mean_real_queries mean_heads KL(A_t || A_s), last layer's scores
    minilm_value       the same KL on softmax(V V^T / sqrt(d))

Q, K and V of the one layer MiniLM reads are taken with forward hooks on the attention's
query/key/value Linear modules, so the attention itself can stay SDPA (transformers returns
no pre-softmax scores and, under SDPA, no attention maps at all).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from jaxdistill.bench import run_spec

NEG_LARGE = float(torch.finfo(torch.float32).min) / 2  # jaxdistill/losses/_common.py's
LAD_LN_EPS = 1e-5  # methods/lad.py


class Tap:
  """A model's forward with the internals the terms read: hidden states, and Q, K, V
  ([B, N, S, D]) of one layer through forward hooks (removed by close())."""

  def __init__(self, model, qkv_layer):
    self.model, self.captured, self.hooks = model, {}, []
    if model is not None and qkv_layer is not None:
      attn = model.bert.encoder.layer[qkv_layer].attention.self
      for name in ("query", "key", "value"):
        self.hooks.append(getattr(attn, name).register_forward_hook(
            lambda _m, _i, out, name=name: self.captured.__setitem__(name, out)))

  def forward(self, b: dict, *, hidden: bool) -> dict:
    self.captured.clear()
    out = self.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"],
                     token_type_ids=b["token_type_ids"], output_hidden_states=hidden)
    res = {"logits": out.logits.float(), "hidden": out.hidden_states if hidden else None}
    heads = self.model.config.num_attention_heads
    for name, x in self.captured.items():
      bsz, seq, width = x.shape
      res[name] = x.float().view(bsz, seq, heads, width // heads).transpose(1, 2)
    return res

  def close(self) -> None:
    for h in self.hooks:
      h.remove()


def kd_loss(zs, zt, temperature: float, t2: bool = True):
  log_q = F.log_softmax(zs.float() / temperature, -1)
  log_p = F.log_softmax(zt.float() / temperature, -1)
  per = (log_p.exp() * (log_p - log_q)).sum(-1)
  return (per * temperature ** 2 if t2 else per).mean()


def pkd_loss(s_hidden, t_hidden, pairs, kernel=None, bias=None):
  total = 0.0
  for i, j in pairs:
    hs, ht = s_hidden[i][:, 0].float(), t_hidden[j][:, 0].float()
    if kernel is not None:
      hs = hs @ kernel + bias
    d = F.normalize(hs, dim=-1, eps=1e-12) - F.normalize(ht, dim=-1, eps=1e-12)
    total = total + (d * d).sum(-1)
  return total.mean()


def masked_token_mean(per_token, mask):
  m = mask.to(per_token.dtype)
  return (per_token * m).sum() / m.sum().clamp_min(1.0)


def hidden_mse(s, t, mask, kernel=None, bias=None):
  """tinybert_hidden_loss: mean over the width, then over real tokens."""
  s = s.float()
  if kernel is not None:
    s = s @ kernel + bias
  return masked_token_mean(((s - t.float()) ** 2).mean(-1), mask)


def lad_aggregates(teacher_layers, gates: dict, learnable_norm: bool, gate: str = "learned"):
  """a_1 = h_1, a_i = LN(g_i h_i + (1 - g_i) a_{i-1}), g_i = sigmoid(a_{i-1} W_i + b_i); with
  gate="one", g_i = 1 (lad.gate's control)."""
  a = teacher_layers[0].float()
  out = [a]
  for i, h in enumerate(teacher_layers[1:], start=2):
    if gate == "one":
      a = h.float()
    else:
      g = torch.sigmoid(a @ gates[f"{i}_kernel"] + gates[f"{i}_bias"])
      a = g * h.float() + (1.0 - g) * a
    a = F.layer_norm(a, a.shape[-1:], eps=LAD_LN_EPS)
    if learnable_norm:
      a = a * gates[f"{i}_scale"] + gates[f"{i}_offset"]
    out.append(a)
  return out


def lad_loss(s_hidden, t_hidden, mask, aux, learnable_norm: bool, gate: str = "learned"):
  s_layers, t_layers = s_hidden[1:], t_hidden[1:]
  k = len(t_layers) // len(s_layers)
  aggs = lad_aggregates(t_layers[:k * len(s_layers)], aux, learnable_norm, gate)
  kernel, bias = (aux["lad_proj_kernel"], aux["lad_proj_bias"]) if "lad_proj_kernel" in aux else (None, None)
  return torch.stack([hidden_mse(s, aggs[k * (j + 1) - 1], mask, kernel, bias)
                      for j, s in enumerate(s_layers)]).mean()


def relation_kl(s_logits, t_logits, mask):
  """KL(teacher || student) of row softmaxes over real keys ([B, N, S, S] logits), mean over
  heads, then over real query tokens (relations.py's _relation_kl)."""
  km = mask[:, None, None, :].bool()

  def log_softmax(x):
    return F.log_softmax(torch.where(km, x.float().clamp_min(NEG_LARGE), NEG_LARGE), -1)

  lp, lq = log_softmax(t_logits), log_softmax(s_logits)
  kl = torch.where(km, lp.exp() * (lp - lq), 0.0).sum(-1)  # [B, N, S]
  return masked_token_mean(kl.mean(1), mask)


def self_relation(x):
  return x @ x.transpose(-1, -2) / math.sqrt(x.shape[-1])


def attention_scores(q, k):
  return q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])


class LossTerms:
  """config.losses' weighted sum, for one stage; also says what each forward must keep."""

  def __init__(self, c):
    self.weights = run_spec.active_terms(c)
    self.temperature = float(c.kd.temperature) if "kd" in c else 2.0
    self.t2 = bool(c.kd.t2_scaling) if "kd" in c else True
    self.pkd = (str(c.pkd.layer_map), tuple(tuple(p) for p in c.pkd.pairs)) if "pkd" in c else None
    lad = c.lad if "lad" in c else {}
    self.learnable_norm = bool(lad.get("learnable_norm", False))
    self.gate = str(lad.get("gate", "learned"))
    self.teacher_layer = int(c.minilm.teacher_layer) if "minilm" in c else -1
    names = set(self.weights)
    self.needs_teacher = bool(names - {"hard_ce"})
    # What the torch script caches once per stage when the config caches the teacher
    # (train.cache_teacher): the logits (KD), plus PKD's few [CLS] vectors; LAD and MiniLM
    # read whole [B, S, ...] internals, so their teacher runs in every step here.
    self.cacheable = names <= {"hard_ce", "kd", "pkd"}
    self.student_hidden = self.teacher_hidden = bool(names & {"pkd", "lad"})
    self.minilm = bool(names & {"minilm_attention", "minilm_value"})

  def pkd_pairs(self, student_layers: int, teacher_layers: int) -> list:
    kind, pairs = self.pkd
    return run_spec.layer_pairs(kind, student_layers, teacher_layers, pairs)

  def student_qkv_layer(self, cfg):
    return cfg.num_hidden_layers - 1 if self.minilm else None

  def teacher_qkv_layer(self, cfg):
    return run_spec.teacher_layer_index(self.teacher_layer, cfg.num_hidden_layers) if self.minilm else None

  def make_aux(self, s_cfg, t_cfg) -> torch.nn.Module:
    """The terms' own trainable params: LAD's gates (Xavier-uniform kernels, zero biases) and
    a projection when the widths differ (PKD's, LAD's: N(0, 1/H_s) kernels)."""
    aux = torch.nn.ParameterDict()
    if t_cfg is None:
      return aux
    hs, ht = s_cfg.hidden_size, t_cfg.hidden_size

    def proj(name):
      aux[f"{name}_proj_kernel"] = torch.nn.Parameter(torch.randn(hs, ht) / math.sqrt(hs))
      aux[f"{name}_proj_bias"] = torch.nn.Parameter(torch.zeros(ht))

    if "pkd" in self.weights and hs != ht:
      proj("pkd")
    if "lad" in self.weights:
      depth = (t_cfg.num_hidden_layers // s_cfg.num_hidden_layers) * s_cfg.num_hidden_layers
      limit = math.sqrt(6.0 / (ht + ht))
      for i in range(2, depth + 1):
        if self.gate == "learned":
          aux[f"{i}_kernel"] = torch.nn.Parameter(torch.empty(ht, ht).uniform_(-limit, limit))
          aux[f"{i}_bias"] = torch.nn.Parameter(torch.zeros(ht))
        if self.learnable_norm:
          aux[f"{i}_scale"] = torch.nn.Parameter(torch.ones(ht))
          aux[f"{i}_offset"] = torch.nn.Parameter(torch.zeros(ht))
      if hs != ht:
        proj("lad")
    return aux

  def __call__(self, s: dict, t: dict | None, b: dict, aux) -> tuple[torch.Tensor, dict]:
    mask, parts = b["attention_mask"], {}
    for name in self.weights:
      if name == "hard_ce":
        parts[name] = F.cross_entropy(s["logits"], b["labels"])
      elif name == "kd":
        parts[name] = kd_loss(s["logits"], t["logits"], self.temperature, self.t2)
      elif name == "pkd":
        parts[name] = pkd_loss(s["hidden"], t["hidden"], self.pkd_pairs(len(s["hidden"]) - 1, len(t["hidden"]) - 1), aux.get("pkd_proj_kernel"),
                               aux.get("pkd_proj_bias"))
      elif name == "lad":
        parts[name] = lad_loss(s["hidden"], t["hidden"], mask, aux, self.learnable_norm, self.gate)
      elif name == "minilm_attention":
        parts[name] = relation_kl(attention_scores(s["query"], s["key"]),
                                  attention_scores(t["query"], t["key"]), mask)
      elif name == "minilm_value":
        parts[name] = relation_kl(self_relation(s["value"]), self_relation(t["value"]), mask)
    total = sum(self.weights[k] * v for k, v in parts.items())
    return total, parts
