"""Hinton KD with a RoBERTa teacher and student (jaxdistill/models/families.py): fine-tune the
teacher on Rotten Tomatoes (stage 1), then distil a 3-layer RoBERTa student made of teacher
layers 0, 4, 8 with soft targets at T = 2 (T^2-scaled) mixed with the hard-label loss.

  python -m jaxdistill.train --config configs/roberta_kd.py --workdir runs/rt_roberta_kd
  python -m jaxdistill.train --config configs/roberta_kd.py:tiny --workdir /tmp/roberta_kd_tiny

The full run downloads FacebookAI/roberta-base (no RoBERTa checkpoint ships offline). `:tiny`
needs no network: it builds a random 2-layer RoBERTa with a byte-level BPE tokenizer trained
on a few sentences (models/tiny_families.py) under $XDG_CACHE_HOME/jaxdistill/tiny-roberta
(once; later runs reuse it), fine-tunes it as the teacher and distils its layer 0 into a
1-layer student. The numbers mean nothing; the run checks the RoBERTa path end to end.
"""

import os

from jaxdistill.config_lib import base_config, rotten_tomatoes, tiny


def tiny_roberta_dir() -> str:
  from jaxdistill.models.tiny_families import tiny_roberta_checkpoint
  cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
  return str(tiny_roberta_checkpoint(os.path.join(cache, "jaxdistill", "tiny-roberta")))


def get_config(arg: str = ""):
  c = rotten_tomatoes(base_config("kd"))
  c.name = "roberta_kd"
  c.teacher.source = "FacebookAI/roberta-base"
  c.teacher.lr = 2e-5  # RoBERTa fine-tunes at lower rates than MiniLM
  c.student.source = "FacebookAI/roberta-base"
  c.student.layers = (0, 4, 8)
  c.losses.hard_ce = 0.5
  c.losses.kd = 0.5
  c.kd.temperature = 2.0
  if arg == "tiny":
    c = tiny(c)
    c.teacher.source = c.student.source = tiny_roberta_dir()
    c.student.layers = (0,)
  return c
