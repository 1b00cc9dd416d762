"""LAD (Lin et al. 2023, Layer-wise Adaptive Distillation): fine-tune the 6-layer MiniLM
teacher (stage 1), then distil a 3-layer student with soft targets, labels, and the MSE from
each student layer j to the gate-aggregated teacher layers 1..2j.

  python -m jaxdistill.train --config configs/lad.py --workdir runs/rt_lad
  python -m jaxdistill.train --config configs/lad.py:tiny --workdir /tmp/lad_tiny

Weights follow the authors' SST-2 script (the closest task to Rotten Tomatoes): 0.5 hard +
0.5 soft at T = 20 (T^2-scaled), hidden MSE weight 1000, student lr 1e-4, gate lr 1e-6.
Our MSE averages over real tokens only; theirs over the padded sequence.
"""

from jaxdistill.config_lib import base_config, rotten_tomatoes, tiny


def get_config(arg: str = ""):
  c = rotten_tomatoes(base_config("lad"))
  c.losses.hard_ce = 0.5
  c.losses.kd = 0.5
  c.losses.lad = 1000.0
  c.kd.temperature = 20.0
  c.optim.lr = 1e-4
  c.optim.aux_lr = 1e-6  # the gates' own learning rate
  c.lad.learnable_norm = False
  return tiny(c) if arg == "tiny" else c
