"""Fine-tune the 6-layer all-MiniLM-L6-v2 teacher on Rotten Tomatoes (no distillation).

  python -m jaxdistill.train --config configs/finetune.py --workdir runs/rt_teacher
  python -m jaxdistill.train --config configs/finetune.py:tiny --workdir /tmp/ft_tiny
"""

from jaxdistill.config_lib import base_config, rotten_tomatoes, tiny


def get_config(arg: str = ""):
  c = rotten_tomatoes(base_config("finetune"))
  c.student.init, c.student.layers = "pretrained", ()
  c.teacher.source, c.teacher.finetune = "", False
  c.train.epochs = 2
  c.optim.lr = 5e-5
  return tiny(c) if arg == "tiny" else c
