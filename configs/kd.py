"""Hinton KD: fine-tune the MiniLM teacher (stage 1), then distil a 3-layer student with
soft targets at temperature T (T^2-scaled) mixed with the hard-label loss.

  python -m jaxdistill.train --config configs/kd.py --workdir runs/rt_kd
  python -m jaxdistill.train --config configs/kd.py:tiny --workdir /tmp/kd_tiny
"""

from jaxdistill.config_lib import base_config, rotten_tomatoes, tiny


def get_config(arg: str = ""):
  c = rotten_tomatoes(base_config("kd"))
  c.losses.hard_ce = 0.5
  c.losses.kd = 0.5
  c.kd.temperature = 2.0
  return tiny(c) if arg == "tiny" else c
