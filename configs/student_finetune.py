"""The no-teacher baseline: a 3-layer student (MiniLM layers 0, 2, 4) fine-tuned on labels only.

  python -m jaxdistill.train --config configs/student_finetune.py --workdir runs/rt_student_ft
"""

from jaxdistill.config_lib import base_config, rotten_tomatoes, tiny


def get_config(arg: str = ""):
  c = rotten_tomatoes(base_config("finetune"))
  c.teacher.source, c.teacher.finetune = "", False
  return tiny(c) if arg == "tiny" else c
