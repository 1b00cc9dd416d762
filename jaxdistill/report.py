"""The compression report written at the end of every distillation run, and the timing behind it.

A report answers three questions about the student against its teacher: how much quality it
keeps (metrics per split, retention % on the task's primary metric), how much smaller it is
(parameter counts, with and without embeddings) and how much faster it runs (latency measured
here, at one batch shape, teacher and student interleaved). ``write_report`` stores it as
``report.md`` for people and ``report.json`` for tools (``results_table`` builds the README table).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

__all__ = ["measure_latency", "compare_latency", "retention_pct", "CompressionReport",
           "format_report", "write_report", "read_report", "results_table"]


# ---------------------------------------------------------------------------------------------
# Latency

def _time_call(fn: Callable, args: tuple) -> float:
  """Seconds for one call, including the device work: JAX dispatch is asynchronous, so without
  block_until_ready we would time only the enqueueing of the computation."""
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - t0


def _summary(times: list[float]) -> dict:
  return {"median_s": statistics.median(times), "mean_s": statistics.fmean(times),
          "min_s": min(times), "iters": len(times)}


def measure_latency(fn: Callable, *args, warmup: int = 2, iters: int = 10) -> dict:
  """Time ``fn(*args)`` (a jitted callable): ``{median_s, mean_s, min_s, iters}`` per call.

  The ``warmup`` calls are not timed; they absorb compilation and first-touch allocation.
  The median is the number to report: it ignores the odd slow call (GC, another process).
  """
  if iters < 1:
    raise ValueError(f"iters must be >= 1, got {iters}")
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  return _summary([_time_call(fn, args) for _ in range(iters)])


def compare_latency(teacher_fn: Callable, student_fn: Callable, args: tuple = (), *,
                    warmup: int = 2, iters: int = 10) -> dict:
  """Median latency of teacher and student on the same ``args``, and speedup = teacher/student.

  Calls alternate teacher, student, teacher, student, ... (warmup included), so slow drift of
  the machine (thermal throttling, a neighbour's job) hits both equally instead of biasing
  whichever model happened to be timed second. Returns ``{teacher_s, student_s, speedup, iters,
  teacher_mean_s, teacher_min_s, student_mean_s, student_min_s}`` (``*_s``: seconds per call).
  """
  if iters < 1:
    raise ValueError(f"iters must be >= 1, got {iters}")
  for _ in range(warmup):
    jax.block_until_ready(teacher_fn(*args))
    jax.block_until_ready(student_fn(*args))
  t_times, s_times = [], []
  for _ in range(iters):
    t_times.append(_time_call(teacher_fn, tuple(args)))
    s_times.append(_time_call(student_fn, tuple(args)))
  t, s = _summary(t_times), _summary(s_times)
  return {"teacher_s": t["median_s"], "student_s": s["median_s"],
          "speedup": t["median_s"] / s["median_s"] if s["median_s"] > 0 else None,
          "iters": iters, "teacher_mean_s": t["mean_s"], "teacher_min_s": t["min_s"],
          "student_mean_s": s["mean_s"], "student_min_s": s["min_s"]}


# ---------------------------------------------------------------------------------------------
# The report

def retention_pct(teacher_value, student_value) -> float | None:
  """student / teacher x 100, or None where undefined (missing, non-finite, or teacher <= 0:
  a ratio against a zero or negative MCC says nothing about how much quality was kept)."""
  if teacher_value is None or student_value is None:
    return None
  t, s = float(teacher_value), float(student_value)
  if not (math.isfinite(t) and math.isfinite(s)) or t <= 0:
    return None
  return 100.0 * s / t


def _ratio(a, b) -> float | None:
  return float(a) / float(b) if a is not None and b else None

def _jsonable(x: Any) -> Any:
  """Plain JSON types; nan/inf become None so the file is strict JSON (readable by jq, JS)."""
  if isinstance(x, dict):
    return {str(k): _jsonable(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [_jsonable(v) for v in x]
  if isinstance(x, (np.ndarray, np.generic)):
    return _jsonable(x.tolist())
  if isinstance(x, float):
    return x if math.isfinite(x) else None
  if x is None or isinstance(x, (bool, int, str)):
    return x
  return str(x)  # paths, enums, dtypes in a config: readable, and never a crash at the very end


@dataclasses.dataclass
class CompressionReport:
  """Quality, size and speed of one student against its teacher. Build it with ``build``.

  Metrics are ``{split: {metric: value}}`` (splits "dev", "test", ...). ``retention`` is
  ``{split: student/teacher x 100}`` on the primary ``metric``. ``param_ratio`` = teacher/student.
  The ``*_no_embed`` counts leave out the embedding tables: in a small BERT these are a large
  share of the parameters (all-MiniLM-L6: ~12M of ~23M) but cost a lookup, not a matmul, so the
  count without them is the one that tracks compute and latency. Latency is per batch of
  ``batch_shape`` = [B, S] on ``device``, median milliseconds, speedup = teacher/student.
  """

  name: str
  method: str
  task: str
  metric: str
  teacher_metrics: dict
  student_metrics: dict
  retention: dict
  teacher_params: int
  student_params: int
  param_ratio: float | None
  teacher_params_no_embed: int | None = None
  student_params_no_embed: int | None = None
  param_ratio_no_embed: float | None = None
  batch_shape: tuple | None = None
  teacher_ms: float | None = None
  student_ms: float | None = None
  speedup: float | None = None
  latency_iters: int | None = None
  device: str = ""
  train_seconds: float | None = None  # every train stage of the run (train_stages), summed
  train_stages: dict = dataclasses.field(default_factory=dict)  # stage -> seconds ("teacher" apart)
  config: dict = dataclasses.field(default_factory=dict)
  extra: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    # Normalise at construction so an object and its JSON round trip compare equal.
    for f in ("teacher_metrics", "student_metrics", "retention", "config", "extra"):
      setattr(self, f, _jsonable(getattr(self, f) or {}))
    if self.batch_shape is not None:
      self.batch_shape = tuple(int(d) for d in self.batch_shape)

  @classmethod
  def build(cls, *, name: str, method: str, task: str, metric: str, teacher_metrics: dict,
            student_metrics: dict, teacher_params: int, student_params: int,
            teacher_params_no_embed: int | None = None, student_params_no_embed: int | None = None,
            latency: dict | None = None, batch_shape=None, device: str = "",
            train_seconds: float | None = None, config: dict | None = None,
            extra: dict | None = None, train_stages: dict | None = None) -> "CompressionReport":
    """Derive retention, ratios and milliseconds; ``latency`` is ``compare_latency``'s dict."""
    retention = {split: retention_pct(teacher_metrics[split].get(metric), m.get(metric))
                 for split, m in student_metrics.items() if split in teacher_metrics}
    lat, ms = latency or {}, lambda s: None if s is None else 1000.0 * s
    return cls(name=name, method=method, task=task, metric=metric,
               teacher_metrics=teacher_metrics, student_metrics=student_metrics,
               retention=retention, teacher_params=int(teacher_params),
               student_params=int(student_params), param_ratio=_ratio(teacher_params, student_params),
               teacher_params_no_embed=teacher_params_no_embed,
               student_params_no_embed=student_params_no_embed,
               param_ratio_no_embed=_ratio(teacher_params_no_embed, student_params_no_embed),
               batch_shape=batch_shape, teacher_ms=ms(lat.get("teacher_s")),
               student_ms=ms(lat.get("student_s")), speedup=lat.get("speedup"),
               latency_iters=lat.get("iters"), device=device, train_seconds=train_seconds,
               train_stages={k: float(v) for k, v in (train_stages or {}).items()},
               config=config or {}, extra=extra or {})

  def to_dict(self) -> dict:
    return _jsonable(dataclasses.asdict(self))

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), indent=2, allow_nan=False)

  @classmethod
  def from_dict(cls, d: dict) -> "CompressionReport":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
      raise ValueError(f"unknown CompressionReport fields {unknown}")
    return cls(**d)

  @classmethod
  def from_json(cls, text: str) -> "CompressionReport":
    return cls.from_dict(json.loads(text))


# ---------------------------------------------------------------------------------------------
# Rendering

def _num(x, fmt: str = "{:.4f}") -> str:
  return "n/a" if x is None else fmt.format(x)


def _count(n) -> str:
  return "n/a" if n is None else f"{n:,} ({n / 1e6:.1f}M)"


def _duration(s) -> str:
  if s is None or s < 60:
    return "n/a" if s is None else f"{s:.1f}s"
  m, sec = divmod(int(round(s)), 60)
  h, m = divmod(m, 60)
  return f"{h}h {m:02d}m {sec:02d}s" if h else f"{m}m {sec:02d}s"


def _splits(r: CompressionReport) -> list[str]:
  order = {"dev": 0, "validation": 0, "test": 1}
  return sorted(set(r.teacher_metrics) | set(r.student_metrics), key=lambda s: (order.get(s, 2), s))


def format_report(report: CompressionReport, *, include_config: bool = False) -> str:
  """The report as markdown (tables read fine on a terminal too)."""
  r = report
  lines = [f"## Compression report: {r.name}", "",
           f"Method **{r.method}** on **{r.task}**; primary metric **{r.metric}**.", "",
           "| split | metric | teacher | student | retention |", "|---|---|---|---|---|"]
  for split in _splits(r):
    t, s = r.teacher_metrics.get(split, {}), r.student_metrics.get(split, {})
    names = [r.metric] + [m for m in dict.fromkeys([*s, *t]) if m != r.metric]
    for m in names:
      ret = _num(r.retention.get(split), "{:.1f}%") if m == r.metric else ""
      label = f"**{m}**" if m == r.metric else m
      lines.append(f"| {split} | {label} | {_num(t.get(m))} | {_num(s.get(m))} | {ret} |")
  shape = "x".join(map(str, r.batch_shape)) if r.batch_shape else "n/a"
  lines += ["", "| size and speed | teacher | student | teacher / student |", "|---|---|---|---|",
            f"| parameters | {_count(r.teacher_params)} | {_count(r.student_params)} "
            f"| {_num(r.param_ratio, '{:.2f}x')} |",
            f"| parameters excl. embeddings | {_count(r.teacher_params_no_embed)} "
            f"| {_count(r.student_params_no_embed)} | {_num(r.param_ratio_no_embed, '{:.2f}x')} |",
            f"| latency, batch [B, S] = {shape} (ms, median) | {_num(r.teacher_ms, '{:.2f}')} "
            f"| {_num(r.student_ms, '{:.2f}')} | {_num(r.speedup, '{:.2f}x')} |", "",
            f"Device: {r.device or 'n/a'}. Latency iterations: {r.latency_iters or 'n/a'}. "
            f"Training time: {_training_time(r)}."]
  if r.extra:
    lines += ["", "Extra: " + json.dumps(r.extra, sort_keys=True)]
  if include_config and r.config:
    lines += ["", "<details><summary>Config</summary>", "", "```json",
              json.dumps(r.config, indent=2, sort_keys=True), "```", "", "</details>"]
  return "\n".join(lines) + "\n"


def _atomic_write(path: Path, text: str) -> None:
  """Write to a temp file in the same directory, then rename over ``path``: a crash or a reader
  never sees a half-written report (os.replace is atomic within a filesystem)."""
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; a report is read like the run's other files
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):  # e.g. the disk filled up mid-write: leave no litter behind
      os.unlink(tmp)
    raise


def _training_time(r: CompressionReport) -> str:
  """One rule for every method: the student's train stages summed (a one-stage run: its own
  time); the teacher's fine-tuning, when the run did it, shown beside, not in the sum."""
  stages = {k: v for k, v in r.train_stages.items() if k != "teacher"}
  text = _duration(r.train_seconds)
  if len(stages) > 1:
    text += f" (its {len(stages)} train stages: " + ", ".join(
        f"{k} {_duration(v)}" for k, v in stages.items()) + ")"
  if "teacher" in r.train_stages:
    text += f"; teacher fine-tuning {_duration(r.train_stages['teacher'])} besides"
  return text


def write_report(report: CompressionReport, workdir) -> tuple[Path, Path]:
  """Write ``workdir/report.md`` (with the config in a collapsed block) and ``report.json``."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  md_path, json_path = workdir / "report.md", workdir / "report.json"
  _atomic_write(json_path, report.to_json() + "\n")
  _atomic_write(md_path, format_report(report, include_config=True))
  return md_path, json_path


def read_report(path) -> CompressionReport:
  """Load a ``report.json`` (or the workdir that holds one)."""
  path = Path(path)
  if path.is_dir():
    path = path / "report.json"
  return CompressionReport.from_json(path.read_text(encoding="utf-8"))


def results_table(reports: list[CompressionReport]) -> str:
  """One markdown row per run: the student's primary metric on test (dev when the split has no
  test labels, as for GLUE), retention, size and measured speedup."""
  lines = ["| run | method | task | split | metric | teacher | student | retention "
           "| student params | params ratio | speedup |", "|---|---|---|---|---|---|---|---|---|---|---|"]
  for r in reports:
    split = next((s for s in ("test", "dev") if s in r.student_metrics), next(iter(r.student_metrics), ""))
    t = r.teacher_metrics.get(split, {}).get(r.metric)
    s = r.student_metrics.get(split, {}).get(r.metric)
    lines.append(f"| {r.name} | {r.method} | {r.task} | {split} | {r.metric} | {_num(t)} | {_num(s)} "
                 f"| {_num(r.retention.get(split), '{:.1f}%')} | {_count(r.student_params)} "
                 f"| {_num(r.param_ratio, '{:.2f}x')} | {_num(r.speedup, '{:.2f}x')} |")
  return "\n".join(lines) + "\n"
