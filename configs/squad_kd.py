"""Hinton KD on SQuAD v1.1: soft targets on the start and the end distributions
(DistilBERT's SQuAD recipe), averaged, mixed
with the labels. Fine-tunes the MiniLM teacher first (stage 1), then a 3-layer student.

  python -m jaxdistill.train --config configs/squad_kd.py --workdir runs/squad_kd
  python -m jaxdistill.train --config configs/squad_kd.py:tiny --workdir /tmp/squad_kd_tiny
"""

from jaxdistill.config_lib import base_config, full_squad, squad, tiny_tokens


def get_config(arg: str = ""):
  c = squad(base_config("kd"))
  c.losses.hard_ce = 0.5
  c.losses.kd = 0.5
  c.kd.temperature = 2.0
  if arg == "full" and c.data.task == "squad":
    c = full_squad(c)
  return tiny_tokens(c) if arg == "tiny" else c
