"""Interleaved A/B timing of jaxdistill's train step under code variants: the experiments
behind docs/performance.md's table, reproducible.

    python -m jaxdistill.bench.ab --variants current,jax_random_bits,jax_gelu --batch 8

Each variant is a temporary patch of jaxdistill/models/bert.py (or of the config) applied
while the step is traced and compiled; the compiled programs are then timed in turns
(A B C, C B A, ...), so a machine whose speed drifts slows them alike. Reported per variant:
the median seconds per step and the median (min, max) over rounds of `current`'s time over
the variant's (> 1 = the variant is faster). `--clock cpu` times process CPU seconds, which
other tenants of a shared machine disturb much less than wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time

import jax
import jax.numpy as jnp
from flax import nnx

from jaxdistill.bench import jax_side, setup as setup_lib
from jaxdistill.models import bert, ops


@contextlib.contextmanager
def _patched(obj, **attrs):
  old = {k: getattr(obj, k) for k in attrs}
  for k, v in attrs.items():
    setattr(obj, k, v)
  try:
    yield
  finally:
    for k, v in old.items():
      setattr(obj, k, v)


def _autodiff_layer_norm(x, scale, bias, eps):
  """flax nnx.LayerNorm's maths (E[x^2] - E[x]^2 variance), differentiated by autodiff."""
  x32 = x.astype(jnp.float32)
  mean = x32.mean(-1, keepdims=True)
  var = jnp.maximum((x32 * x32).mean(-1, keepdims=True) - mean * mean, 0.0)
  return ((x32 - mean) * jax.lax.rsqrt(var + eps) * scale + bias).astype(x.dtype)


def _jax_gelu(name):
  return (lambda x: jax.nn.gelu(x, approximate=False)) if name == "gelu" else _ACTIVATION(name)


_ACTIVATION = bert.activation
_ATTENTION = bert.Attention.__call__
_LAYER = bert.BertLayer.__call__


def _attention(project, scores_eq, ctx_eq, out_eq, scale_scores):
  """An Attention.__call__ with another layout or scaling, for the layout experiments."""

  def call(self, h, mask, dropout_key, collect):
    cfg, dt = self.cfg, self.cfg.compute_dtype
    scale = 1.0 / math.sqrt(cfg.head_dim)
    q, k, v = project(self, h, 1.0 if scale_scores else scale)
    scores = jnp.einsum(scores_eq, q, k) * (jnp.asarray(scale, dt) if scale_scores else 1)
    scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(dt)
    ctx = jnp.einsum(ctx_eq, bert.dropout(probs, cfg.attention_dropout, bert._fold(dropout_key, 0)), v)
    out = jnp.einsum(out_eq, ctx, self.out_kernel[...].astype(dt)) + self.out_bias[...].astype(dt)
    out = self.norm(h + bert.dropout(out, cfg.hidden_dropout, bert._fold(dropout_key, 1)))
    return out, bert.LayerInternals(scores=scores if collect.attention_scores else None,
                                    probs=probs if collect.attention_probs else None)
  return call


def _head_major(self, h, q_scale):  # three head-major einsums (before project_qkv fused them)
  return self.query(h, q_scale), self.key(h), self.value(h)


def _fused(self, h, q_scale):  # the current projection: bert.Attention.project_qkv
  return self.project_qkv(h, q_scale)


def _token_major(self, h, q_scale):  # [B, S, N, D]: the layout before head-major projections
  dt = self.cfg.compute_dtype
  return tuple(jnp.einsum("bsh,hnd->bsnd", h, (m.kernel[...] * s).astype(dt)) + (m.bias[...] * s).astype(dt)
               for m, s in ((self.query, q_scale), (self.key, 1.0), (self.value, 1.0)))


def _fused_qkv(self, h, q_scale):  # one [H, 3H] matmul instead of three [H, H]
  dt = self.cfg.compute_dtype
  kernel = jnp.stack([self.query.kernel[...] * q_scale, self.key.kernel[...], self.value.kernel[...]], 1)
  bias = jnp.stack([self.query.bias[...] * q_scale, self.key.bias[...], self.value.bias[...]], 0)
  x = jnp.einsum("bsh,hcnd->cbnsd", h, kernel.astype(dt)) + bias.astype(dt)[:, None, :, None, :]
  return x[0], x[1], x[2]




def _remat_layer(self, h, mask, *, dropout_key=None, collect=bert.Collect()):
  graph, state = nnx.split(self)

  def layer(state, h, mask, key):
    return _LAYER(nnx.merge(graph, state), h, mask, dropout_key=key, collect=collect)
  return jax.checkpoint(layer)(state, h, mask, dropout_key)


HEAD_MAJOR = ("bnqd,bnkd->bnqk", "bnqk,bnkd->bnqd", "bnqd,ndh->bqh")
# name -> (what it is, context manager factory, compute dtype or None)
VARIANTS = {
    "current": ("the code as it is", contextlib.nullcontext, None),
    "jax_random_bits": ("dropout bits from jax.random.bits(uint16) instead of the unrolled Threefry",
                        lambda: _patched(ops, random_uint16=lambda k, s: jax.random.bits(k, s, jnp.uint16)), None),
    "jax_gelu": ("jax.nn.gelu(approximate=False) under autodiff instead of the custom JVP",
                 lambda: _patched(bert, activation=_jax_gelu), None),
    "autodiff_layer_norm": ("nnx.LayerNorm's maths under autodiff instead of the custom VJP",
                            lambda: _patched(bert, layer_norm=_autodiff_layer_norm), None),
    "scale_scores": ("1/sqrt(D) applied to the [B,N,S,S] scores, not folded into W_q",
                     lambda: _patched(bert.Attention, __call__=_attention(_fused, *HEAD_MAJOR, True)), None),
    "fused_qkv": ("Q, K, V from one [H, 3H] matmul",
                  lambda: _patched(bert.Attention, __call__=_attention(_fused_qkv, *HEAD_MAJOR, False)), None),
    "three_projections": ("Q, K, V from three head-major [B,S,H] x [H,N,D] einsums (not one fused matmul)",
                          lambda: _patched(bert.Attention, __call__=_attention(_head_major, *HEAD_MAJOR, False)), None),
    "token_major": ("Q, K, V in [B, S, N, D] (no head-major projection)",
                    lambda: _patched(bert.Attention, __call__=_attention(
                        _token_major, "bqnd,bknd->bnqk", "bnqk,bknd->bqnd", "bqnd,ndh->bqh", False)), None),
    "no_dropout": ("dropout off (an upper bound, not a change)",
                   lambda: _patched(bert, dropout=lambda x, rate, key: x), None),
    "remat": ("jax.checkpoint around every encoder layer",
              lambda: _patched(bert.BertLayer, __call__=_remat_layer), None),
    "bf16": ("train.dtype=bfloat16 (bf16 compute, fp32 master weights)", contextlib.nullcontext, "bfloat16"),
}


def run(argv=None) -> dict:
  ap = argparse.ArgumentParser(prog="python -m jaxdistill.bench.ab", description=__doc__.split("\n")[0])
  ap.add_argument("--variants", default="current,jax_random_bits,jax_gelu,autodiff_layer_norm",
                  help=f"comma-separated, the first is the baseline; of: {', '.join(VARIANTS)}")
  ap.add_argument("--preset", default="minilm")
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--seq", type=int, default=0)
  ap.add_argument("--rounds", type=int, default=8)
  ap.add_argument("--iters", type=int, default=2)
  ap.add_argument("--clock", default="cpu", choices=("cpu", "wall"))
  args = ap.parse_args(argv)
  names = [v.strip() for v in args.variants.split(",") if v.strip()]
  unknown = [v for v in names if v not in VARIANTS]
  if unknown or not names:
    raise SystemExit(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
  clock = time.process_time if args.clock == "cpu" else time.perf_counter
  built = {}
  for name in names:
    what, patch, dtype = VARIANTS[name]
    s = setup_lib.from_args(argparse.Namespace(preset=args.preset, batch=args.batch, seq=args.seq,
                                               dtype=dtype or "float32", weights="random", seed=0))
    with patch():
      bench = jax_side.build(s.student, s.teacher, s.batch, s.seq, s.dtype, setup_lib.params(s),
                             inference=False)
    bench.train(1)
    print(f"# {name}: {what}; compiled in {bench.compile_s:.1f} s, XLA buffer plan "
          f"{(bench.xla_memory_bytes or 0) / 2 ** 20:.0f} MiB", flush=True)
    built[name] = bench
  times = {n: [] for n in names}
  for r in range(args.rounds):
    for name in (names if r % 2 == 0 else names[::-1]):
      t = clock()
      built[name].train(args.iters)
      times[name].append((clock() - t) / args.iters)
  base = names[0]
  result = {}
  for name in names:
    ratios = [b / t for b, t in zip(times[base], times[name])]
    result[name] = {"s_per_step": statistics.median(times[name]), "speedup": statistics.median(ratios),
                    "min": min(ratios), "max": max(ratios)}
    print(f"{name:22s} {statistics.median(times[name]):7.3f} {args.clock} s/step   {base}/{name}: "
          f"{statistics.median(ratios):.3f} [{min(ratios):.3f}, {max(ratios):.3f}]")
  return result


if __name__ == "__main__":
  run()
