"""Hinton KD on WNUT-2016 NER: per-token soft targets at each word's first wordpiece, mixed
with the labels. Fine-tunes the MiniLM teacher first (stage 1), then a 3-layer student.

  python -m jaxdistill.train --config configs/ner_kd.py --workdir runs/ner_kd
  python -m jaxdistill.train --config configs/ner_kd.py:tiny --workdir /tmp/ner_kd_tiny
"""

from jaxdistill.config_lib import base_config, full_squad, wnut16, tiny_tokens


def get_config(arg: str = ""):
  c = wnut16(base_config("kd"))
  c.losses.hard_ce = 0.5
  c.losses.kd = 0.5
  c.kd.temperature = 2.0
  if arg == "full" and c.data.task == "squad":
    c = full_squad(c)
  return tiny_tokens(c) if arg == "tiny" else c
