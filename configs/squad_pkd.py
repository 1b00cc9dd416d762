"""BERT-PKD on SQuAD v1.1: the patient [CLS] hidden-state loss (skip map) beside KD on the
start and end distributions and the labels, unchanged from sentence classification.

  python -m jaxdistill.train --config configs/squad_pkd.py --workdir runs/squad_pkd
  python -m jaxdistill.train --config configs/squad_pkd.py:tiny --workdir /tmp/squad_pkd_tiny
"""

from jaxdistill.config_lib import base_config, tiny_tokens, squad


def get_config(arg: str = ""):
  c = squad(base_config("pkd"))
  c.losses.hard_ce = 0.5
  c.losses.kd = 0.5
  c.losses.pkd = 100.0 / (2 * 384)  # beta 100 over the sum formula, as configs/pkd.py
  c.kd.temperature = 2.0
  c.pkd.layer_map = "skip"
  return tiny_tokens(c) if arg == "tiny" else c
