"""Compression report: retention, JSON round trip, rendering, atomic writes, latency timing."""

import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill import report as R


def make_report(**overrides):
  kwargs = dict(
      name="kd-l3", method="kd", task="glue/sst2", metric="accuracy",
      teacher_metrics={"dev": {"accuracy": 0.9, "f1": 0.91}, "test": {"accuracy": 0.8, "f1": 0.82}},
      student_metrics={"dev": {"accuracy": np.float32(0.855), "f1": 0.86},
                       "test": {"accuracy": 0.78, "f1": 0.8}},
      teacher_params=22_713_216, student_params=11_071_872,
      teacher_params_no_embed=10_646_784, student_params_no_embed=5_323_392,
      latency={"teacher_s": 0.012, "student_s": 0.004, "speedup": 3.0, "iters": 10},
      batch_shape=(32, 128), device="cpu", train_seconds=3723.0,
      config={"lr": 1e-4, "layers": (0, 2, 5), "path": R.Path("/tmp/x")}, extra={"note": "hi"})
  kwargs.update(overrides)
  return R.CompressionReport.build(**kwargs)


def test_retention_and_ratios():
  r = make_report()
  assert r.retention["dev"] == pytest.approx(100 * 0.855 / 0.9, rel=1e-6)  # 95.0 %
  assert r.retention["test"] == pytest.approx(100 * 0.78 / 0.8)  # 97.5 %
  assert r.param_ratio == pytest.approx(22_713_216 / 11_071_872)
  assert r.param_ratio_no_embed == pytest.approx(2.0)
  assert (r.teacher_ms, r.student_ms, r.speedup) == (pytest.approx(12.0), pytest.approx(4.0), 3.0)


def test_retention_undefined_cases():
  assert R.retention_pct(0.0, 0.5) is None  # zero teacher MCC
  assert R.retention_pct(-0.1, 0.2) is None
  assert R.retention_pct(float("nan"), 0.2) is None
  assert R.retention_pct(0.5, None) is None
  # A split the teacher was not evaluated on gets no retention entry.
  r = make_report(teacher_metrics={"dev": {"accuracy": 0.9}})
  assert set(r.retention) == {"dev"}


def test_json_round_trip_is_strict_json():
  r = make_report(extra={"nan": float("nan"), "arr": np.arange(3)})
  text = r.to_json()
  json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
  back = R.CompressionReport.from_json(text)
  assert back == r
  assert back.batch_shape == (32, 128)
  assert back.extra == {"nan": None, "arr": [0, 1, 2]}
  assert back.config["path"] == "/tmp/x" and back.config["layers"] == [0, 2, 5]
  with pytest.raises(ValueError, match="unknown"):
    R.CompressionReport.from_dict({**r.to_dict(), "bogus": 1})


def test_markdown_contains_the_numbers():
  text = R.format_report(make_report())
  for s in ("kd-l3", "glue/sst2", "0.9000", "0.8550", "95.0%", "97.5%", "22,713,216", "11,071,872",
            "2.05x", "2.00x", "12.00", "4.00", "3.00x", "32x128", "1h 02m 03s", "cpu"):
    assert s in text, s
  assert "Config" not in text  # the terminal version leaves the config out


def test_missing_latency_and_counts_render_as_na():
  r = make_report(latency=None, batch_shape=None, teacher_params_no_embed=None, train_seconds=None)
  text = R.format_report(r)
  assert "n/a" in text and r.speedup is None and r.param_ratio_no_embed is None


def test_write_report_atomic(tmp_path):
  r = make_report()
  md, js = R.write_report(r, tmp_path / "run")
  assert md.name == "report.md" and js.name == "report.json"
  assert R.read_report(tmp_path / "run") == r
  assert "22,713,216" in md.read_text() and "Config" in md.read_text()
  # Writing again replaces in place and leaves no temp files behind.
  R.write_report(make_report(name="second"), tmp_path / "run")
  assert sorted(os.listdir(tmp_path / "run")) == ["report.json", "report.md"]
  assert R.read_report(js).name == "second"


def test_results_table():
  rows = [make_report(), make_report(name="pkd-l3", method="pkd", student_metrics={"dev": {"accuracy": 0.88}},
                                     latency=None)]
  table = R.results_table(rows).strip().splitlines()
  assert len(table) == 4
  assert "| kd-l3 | kd | glue/sst2 | test | accuracy | 0.8000 | 0.7800 | 97.5% |" in table[2]
  assert "3.00x" in table[2]
  assert "| pkd-l3 | pkd | glue/sst2 | dev |" in table[3] and "n/a" in table[3]  # no test split


def test_compare_latency_interleaves_calls():
  calls = []
  a = lambda x: calls.append("A") or x
  b = lambda x: calls.append("B") or x
  out = R.compare_latency(a, b, (1,), warmup=2, iters=5)
  assert calls == ["A", "B"] * 7
  assert out["iters"] == 5 and set(out) >= {"teacher_s", "student_s", "speedup"}


def test_measure_latency_counts_calls():
  calls = []
  out = R.measure_latency(lambda x, y: calls.append((x, y)), 1, 2, warmup=3, iters=4)
  assert calls == [(1, 2)] * 7
  assert out["iters"] == 4 and out["min_s"] <= out["median_s"]
  assert math.isfinite(out["mean_s"])
  with pytest.raises(ValueError):
    R.measure_latency(lambda: None, iters=0)


def _tanh_chain(layers):
  @jax.jit
  def f(x, w):
    for _ in range(layers):
      x = jnp.tanh(x @ w)
    return x
  return f


def test_speedup_of_four_times_less_work():
  # 16 vs 4 matmuls of [256, 256] x [256, 256]: ~8 ms vs ~2 ms on 2 CPU cores, big enough that
  # dispatch overhead does not blur the 4x; > 1.5 leaves room for a noisy machine.
  w = jax.random.normal(jax.random.key(0), (256, 256)) / 16
  x = jax.random.normal(jax.random.key(1), (256, 256))
  out = R.compare_latency(_tanh_chain(16), _tanh_chain(4), (x, w), iters=10)
  assert out["speedup"] > 1.5, out
  assert out["teacher_s"] > out["student_s"] > 0
