"""`python -m jaxdistill.bench` runs at a tiny shape and reports every figure; the fast paths
it relies on in the model compute what they replace.

No timing is asserted (timings are machine-dependent); the benchmark's numbers live in
docs/performance.md. References: the FLOP count against the issue's hand count, the fast
Threefry against jax.random.bits, GELU and LayerNorm (values and gradients) against
jax.nn.gelu and a NumPy LayerNorm, the weight conversion against transformers' PyTorch BERT.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdistill.bench import flops, setup
from jaxdistill.models import BertConfig, bert, hub


def test_flop_count_matches_the_hand_count():
  # MiniLM 6L/384 -> 3L at batch 32 x 128: per token and layer 2 (4 H^2 + 2 H I) + 4 S H FLOPs,
  # 3 x the student's forward + the teacher's forward, ~230 GFLOP (issue #7), plus the heads.
  t = BertConfig(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536)
  fl = flops.step_flops(t.replace(num_layers=3), t, 32, 128)
  per_layer = 32 * 128 * (2 * (4 * 384 ** 2 + 2 * 384 * 1536) + 4 * 128 * 384)
  heads = 2 * 32 * (384 * 384 + 384 * 2)
  assert fl.train_step == 3 * (3 * per_layer + heads) + 6 * per_layer + heads
  assert 229e9 < fl.train_step < 231e9


def test_bench_runs_at_a_tiny_shape_and_prints_every_figure(tmp_path, capsys):
  pytest.importorskip("torch")
  pytest.importorskip("transformers")
  from jaxdistill.bench.__main__ import run
  out_json = tmp_path / "bench.json"
  result = run(["--preset", "tiny", "--iters", "1", "--rounds", "2", "--memory", "off",
                "--json", str(out_json)])
  text = capsys.readouterr().out
  for field in ("model FLOPs per train step", "matmul peak jax/float32", "matmul peak torch/float32",
                "machine peak", "examples/s", "GFLOP/s", "MFU", "compile/1st", "infer T", "T/S",
                "jaxdistill / PyTorch train examples/s", "student inference, PyTorch latency"):
    assert field in text, field
  saved = json.loads(out_json.read_text())
  assert saved["flops"]["train_step"] == result["flops"]["train_step"] > 0
  for name in ("jax", "torch"):
    f = saved["frameworks"][name]
    assert f["examples_per_s"] > 0 and len(f["examples_per_s_by_round"]) == 2
    assert 0 < f["mfu"] and f["infer_teacher_s"] > 0 and f["infer_student_s"] > 0
    assert np.isfinite(f["last_loss"]) and f["last_loss"] > 0  # hard CE alone is ~log 2
  assert saved["frameworks"]["jax"]["compile_s"] > 0
  assert saved["frameworks"]["torch"]["first_step_s"] > 0
  assert saved["jax_over_torch"] > 0 and saved["machine_peak_gflops"] > 0


def test_memory_probe_reports_a_peak_for_each_framework():
  pytest.importorskip("torch")
  from jaxdistill.bench import memory
  args = setup.arg_parser().parse_args(["--preset", "tiny", "--iters", "1"])
  results = memory.run_children(["jax", "torch"], args)
  for name, m in results.items():
    assert "error" not in m, m
    assert m["framework"] == name
    # Both hold at least the two models' weights (tiny: ~0.2 MB) on top of the baseline.
    assert m["step_peak_bytes"] > 0 and m["process_peak_bytes"] > m["step_peak_bytes"]
  assert results["jax"]["xla_planned_bytes"] > 0


def test_unknown_preset_and_framework_are_one_line_errors():
  from jaxdistill.bench.__main__ import run
  with pytest.raises(SystemExit, match="--preset 'huge' is unknown"):
    run(["--preset", "huge"])
  with pytest.raises(SystemExit, match="--frameworks"):
    run(["--preset", "tiny", "--frameworks", "mxnet"])


def test_torch_reference_computes_the_same_model():
  """The PyTorch side loads jaxdistill's weights through hf_convert: same logits."""
  pytest.importorskip("torch")
  import torch

  from jaxdistill.bench import jax_side, torch_side
  cfg = BertConfig(**setup.PRESETS["tiny"]["teacher"])
  params = jax_side.random_params(cfg, 0)
  batch = jax_side.synthetic_batch(3, 16, cfg.vocab_size)
  ours = hub.with_params(nnx.eval_shape(lambda: bert.BertModel(cfg, rngs=nnx.Rngs(0))), params)
  logits = ours(jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"]),
                jnp.asarray(batch["token_type_ids"])).logits
  ref = torch_side.hf_model(cfg, params, "eager", "cpu").eval()
  with torch.no_grad():
    t_logits = ref(torch.from_numpy(batch["input_ids"]).long(),
                   attention_mask=torch.from_numpy(batch["attention_mask"]).long(),
                   token_type_ids=torch.from_numpy(batch["token_type_ids"]).long()).logits
  np.testing.assert_allclose(np.asarray(logits), t_logits.numpy(), atol=1e-5)


# ---- the model's fast paths compute what they replace -------------------------------------

def test_unrolled_threefry_is_jax_threefry():
  if not jax.config.jax_threefry_partitionable:
    pytest.skip("jax.random.bits uses the (0, i) counters only with threefry_partitionable")
  key = jax.random.key(42)
  data = jax.random.key_data(key)
  i = jnp.arange(1000, dtype=jnp.uint32)
  y1, y2 = bert.threefry2x32(data[0], data[1], jnp.zeros_like(i), i)
  np.testing.assert_array_equal(y1 ^ y2, jax.random.bits(key, (1000,), jnp.uint32))


def test_random_uint16_is_uniform_and_keyed():
  bits = np.asarray(bert.random_uint16(jax.random.key(0), (7, 1001)), np.int64)  # 7007: not / 4
  assert bits.shape == (7, 1001) and bits.min() >= 0 and bits.max() < 65536
  # Each 16-bit value is uniform: its top 4 bits fall into 16 equal bins (chi-square, 15 dof;
  # 50 is far beyond the 0.9999 quantile of 41.4).
  counts = np.bincount(bits.ravel() >> 12, minlength=16)
  expected = bits.size / 16
  assert ((counts - expected) ** 2 / expected).sum() < 50
  # The four fields of a block are not copies of each other, and another key gives other bits.
  flat = bits.ravel()
  quarter = -(-flat.size // 4)
  assert np.mean(flat[:quarter] == flat[quarter:2 * quarter]) < 0.01
  other = np.asarray(bert.random_uint16(jax.random.key(1), (7, 1001)), np.int64)
  assert np.mean(other == bits) < 0.01
  legacy = bert.random_uint16(jax.random.PRNGKey(0), (7, 1001))  # raw uint32[2] keys work too
  np.testing.assert_array_equal(legacy, bits)


def test_gelu_custom_jvp_matches_jax_gelu_and_its_gradient():
  x = jnp.linspace(-8.0, 8.0, 4001)
  np.testing.assert_allclose(bert.gelu_exact(x), jax.nn.gelu(x, approximate=False), atol=2e-6)
  grad = jax.vmap(jax.grad(bert.gelu_exact))(x)
  ref = jax.vmap(jax.grad(lambda v: jax.nn.gelu(v, approximate=False)))(x)
  np.testing.assert_allclose(grad, ref, atol=2e-6)


def test_layer_norm_custom_vjp_matches_numpy_and_autodiff():
  rng = np.random.default_rng(0)
  x = rng.normal(2.0, 3.0, (4, 5, 16)).astype(np.float32)
  scale, bias = rng.normal(1, 0.2, 16).astype(np.float32), rng.normal(0, 0.2, 16).astype(np.float32)
  mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
  np.testing.assert_allclose(bert.layer_norm(x, scale, bias, 1e-12),
                             (x - mu) / np.sqrt(var + 1e-12) * scale + bias, atol=1e-5)

  def plain(x, s, b):  # differentiated by JAX's autodiff, the reference for the custom VJP
    m = jnp.mean(x, -1, keepdims=True)
    v = jnp.mean(jnp.square(x - m), -1, keepdims=True)
    return (x - m) / jnp.sqrt(v + 1e-12) * s + b

  g = rng.normal(size=x.shape).astype(np.float32)
  ours = jax.vjp(lambda *a: bert.layer_norm(*a, 1e-12), x, scale, bias)[1](g)
  ref = jax.vjp(plain, x, scale, bias)[1](g)
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
  bf = bert.layer_norm(jnp.asarray(x, jnp.bfloat16), scale, bias, 1e-12)
  assert bf.dtype == jnp.bfloat16


def test_host_malloc_tuning_is_accepted_by_glibc_and_can_be_switched_off(monkeypatch):
  import ctypes.util
  from jaxdistill import host_memory
  if not ctypes.util.find_library("c") or "glibc" not in " ".join(__import__("platform").libc_ver()):
    pytest.skip("glibc only")
  assert host_memory.keep_freed_memory()  # mallopt returned 1 for both settings
  monkeypatch.setenv("JAXDISTILL_MALLOC", "default")
  assert not host_memory.keep_freed_memory()
