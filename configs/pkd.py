"""BERT-PKD (Sun et al. 2019): KD plus the normalised [CLS] patient loss on skip-k layers.

  python -m jaxdistill.train --config configs/pkd.py --workdir runs/rt_pkd

The paper's beta (100-500) multiplies a mean over layer pairs and hidden units; our pkd term
is the paper's sum formula, so losses.pkd = beta / (pairs * hidden) = 100 / (2 * 384) here.
"""

from jaxdistill.config_lib import base_config, rotten_tomatoes, tiny


def get_config(arg: str = ""):
  c = rotten_tomatoes(base_config("pkd"))
  c.losses.hard_ce = 0.5
  c.losses.kd = 0.5
  c.losses.pkd = 100.0 / (2 * 384)
  c.kd.temperature = 2.0
  c.pkd.layer_map = "skip"
  return tiny(c) if arg == "tiny" else c
