"""Presets and the shared starting point of both sides: configs, weights, one batch.

Both frameworks get the same teacher and student weights and the same token ids, so they
compute the same function; only the implementation differs.
"""

from __future__ import annotations

import argparse
import dataclasses

from jaxdistill.models import BertConfig

# The MiniLM teacher (all-MiniLM-L6-v2's shape) -> a 3-layer student; BERT-base -> 6 layers.
PRESETS = {
    "minilm": dict(teacher=dict(hidden_size=384, num_layers=6, num_heads=12, intermediate_size=1536),
                   student_layers=3, batch=32, seq=128),
    "base": dict(teacher=dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
                 student_layers=6, batch=32, seq=128),
    # For tests and smoke runs: seconds, not minutes.
    "tiny": dict(teacher=dict(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                              vocab_size=1024, max_position_embeddings=64),
                 student_layers=1, batch=4, seq=16),
}


@dataclasses.dataclass(frozen=True)
class Setup:
  preset: str
  teacher: BertConfig
  student: BertConfig
  batch: int
  seq: int
  dtype: str
  weights: str   # random | pretrained
  seed: int = 0

  def describe(self) -> str:
    t, s = self.teacher, self.student
    return (f"{self.preset}: teacher {t.num_layers}L/{t.hidden_size}/{t.num_heads}h -> student "
            f"{s.num_layers}L, batch {self.batch} x seq {self.seq}, {self.dtype}, "
            f"{self.weights} weights")


def from_args(args: argparse.Namespace) -> Setup:
  if args.preset not in PRESETS:
    raise SystemExit(f"--preset {args.preset!r} is unknown; use one of {', '.join(PRESETS)}")
  p = PRESETS[args.preset]
  teacher = BertConfig(**p["teacher"], dtype=args.dtype, param_dtype="float32")
  student = teacher.replace(num_layers=p["student_layers"])
  seq = args.seq or p["seq"]
  if seq > teacher.max_position_embeddings:
    raise SystemExit(f"--seq {seq} exceeds the model's {teacher.max_position_embeddings} positions")
  if args.weights == "pretrained" and args.preset != "minilm":
    raise SystemExit("--weights pretrained exists for --preset minilm only (all-MiniLM-L6-v2)")
  return Setup(args.preset, teacher, student, args.batch or p["batch"], seq, args.dtype,
               args.weights, args.seed)


def params(setup: Setup) -> tuple[dict, dict]:
  """(student, teacher) parameter dicts. Pretrained: all-MiniLM-L6-v2 as the teacher and its
  layers 0, 2, 4 as the student (the demo's initialisation); random: BertModel's init."""
  from jaxdistill.bench.jax_side import random_params
  if setup.weights == "random":
    return random_params(setup.student, setup.seed), random_params(setup.teacher, setup.seed + 1)
  from jaxdistill.models.hub import load_pretrained, params_of
  from jaxdistill.train.build import select_layers
  model, _ = load_pretrained("all-MiniLM-L6-v2", num_labels=2, dtype=setup.dtype)
  t_params = params_of(model)
  _, s_params = select_layers(model.config, t_params, (0, 2, 4))
  return s_params, t_params


def arg_parser() -> argparse.ArgumentParser:
  ap = argparse.ArgumentParser(
      prog="python -m jaxdistill.bench",
      description="jaxdistill's distillation train step vs a PyTorch reference, interleaved; "
                  "MFU against the measured matmul peak; teacher vs student inference.")
  ap.add_argument("--preset", default="minilm", help="minilm | base | tiny")
  ap.add_argument("--batch", type=int, default=0, help="override the preset's batch size")
  ap.add_argument("--seq", type=int, default=0, help="override the preset's sequence length")
  ap.add_argument("--iters", type=int, default=3, help="train steps per timed block")
  ap.add_argument("--rounds", type=int, default=5, help="interleaved A B A B rounds")
  ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"),
                  help="compute dtype (parameters stay float32 master weights)")
  ap.add_argument("--frameworks", default="jax,torch", help="jax,torch | jax | torch")
  ap.add_argument("--weights", default="random", choices=("random", "pretrained"))
  ap.add_argument("--memory", default="subprocess", choices=("subprocess", "off"),
                  help="peak memory: measured in a child process per framework, or skipped")
  ap.add_argument("--malloc", default="tuned", choices=("tuned", "default"),
                  help="tuned: glibc keeps freed memory for reuse, as `python -m jaxdistill.train` "
                       "does (jaxdistill/host_memory.py); default: glibc's own settings")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--json", default="", help="also write every figure to this file")
  return ap
