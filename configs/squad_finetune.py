"""SQuAD v1.1 extractive QA: the fine-tuned 6-layer MiniLM teacher, alone (the teacher row of
the results; also the teacher stage the squad_kd config runs first).

  python -m jaxdistill.train --config configs/squad_finetune.py --workdir runs/squad_teacher
  python -m jaxdistill.train --config configs/squad_finetune.py:tiny --workdir /tmp/squad_ft_tiny
"""

from jaxdistill.config_lib import base_config, full_squad, squad, tiny_tokens


def get_config(arg: str = ""):
  c = squad(base_config("finetune"))
  c.student.init, c.student.layers = "pretrained", ()
  c.teacher.source, c.teacher.finetune = "", False
  c.train.epochs, c.optim.lr = c.teacher.epochs, c.teacher.lr
  if arg == "full" and c.data.task == "squad":
    c = full_squad(c)
  return tiny_tokens(c) if arg == "tiny" else c
