"""The no-teacher baseline on SQuAD v1.1: a 3-layer student (MiniLM layers 0, 2, 4)
fine-tuned on the labels alone.

  python -m jaxdistill.train --config configs/squad_student_finetune.py --workdir runs/squad_student_ft
  python -m jaxdistill.train --config configs/squad_student_finetune.py:tiny --workdir /tmp/squad_sft_tiny
"""

from jaxdistill.config_lib import base_config, full_squad, squad, tiny_tokens


def get_config(arg: str = ""):
  c = squad(base_config("finetune"))
  c.teacher.source, c.teacher.finetune = "", False
  if arg == "full" and c.data.task == "squad":
    c = full_squad(c)
  return tiny_tokens(c) if arg == "tiny" else c
