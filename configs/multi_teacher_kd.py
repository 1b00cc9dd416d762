"""Multi-teacher KD (methods/multi_teacher.py): a 3-layer student learns from the averaged
soft targets of two fine-tuned MiniLM teachers (fine-tuned with different seeds), with the
labels. One command, three stages, each resumable:

  teacher    fine-tunes all-MiniLM-L6-v2 (seed 0) in <workdir>/teacher
  teacher_b  fine-tunes it again with seed 1 in <workdir>/teacher_b
  (last)     distils the student from both in <workdir>

  python -m jaxdistill.train --config configs/multi_teacher_kd.py --workdir runs/rt_multi_teacher
  python -m jaxdistill.train --config configs/multi_teacher_kd.py:tiny --workdir /tmp/mt_tiny

--config.multi_teacher.weights=0.7,0.3 weights the teachers; --config.multi_teacher.combine=logits
averages their logits instead of their probabilities.
"""

from jaxdistill.config_lib import base_config, rotten_tomatoes, tiny


def get_config(arg: str = ""):
  c = rotten_tomatoes(base_config("multi_teacher_kd"))
  c.losses.hard_ce = 0.5
  c.losses.multi_kd = 0.5
  c.kd.temperature = 2.0
  if arg == "tiny":
    c = tiny(c)
  second_teacher = {
      "method": "finetune", "seed": c.seed + 1, "student.source": c.teacher.source,
      "student.init": "pretrained", "student.layers": (), "losses.multi_kd": 0.0,
      "losses.hard_ce": 1.0, "train.epochs": c.teacher.epochs, "optim.lr": c.teacher.lr,
      "report.compression": False}
  c.stages = (
      {"name": "teacher_b", "set": second_teacher},
      {"name": "distil", "set": {"multi_teacher.sources": ("@stage:teacher_b",)}},
  )
  return c
