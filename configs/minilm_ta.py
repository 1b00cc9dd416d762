"""MiniLM with a teacher assistant (Wang et al. 2020, section 3.3; Mirzadeh et al. 2020):
two distillations chained in one command. The paper's rule for a student of at most half
the teacher's depth and width: first distil the teacher (L layers, width d) into an
assistant with the teacher's depth and the student's width (L layers, width d'), then use
the assistant as the student's teacher. Here:

  teacher    fine-tuned MiniLM        6 layers x 384, 12 heads
  assistant  stage "assistant"        6 layers x 192,  6 heads, random init, from the teacher
  student    stage "student"          3 layers x 192,  6 heads = assistant layers 0, 2, 4,
                                      distilled from the assistant
  finetune   stage "finetune"         the student on the labels (exported, reported against
                                      the original teacher)

  python -m jaxdistill.train --config configs/minilm_ta.py --workdir runs/rt_minilm_ta
  python -m jaxdistill.train --config configs/minilm_ta.py:tiny --workdir /tmp/minilm_ta_tiny

The student has the architecture of configs/minilm_v2.py's, which distils it from the
teacher directly: the two rows compare the assistant against no assistant (here the student
also starts from the assistant's layers, which equal widths allow). Both distillations use
MiniLMv2 relations (minilm_v2, 12 relation heads), since the head counts differ.

The assistant is never fine-tuned: its classifier is exported untrained and nothing reads it
(the student stage's only loss, minilm_v2, reads Q/K/V, and that stage writes no compression
report), so the trainer asks no trained head of it. Fine-tuning it would cost a quarter of the
budget for logits nobody uses; the final report compares the student with the original teacher.

Top-level keys shape both models: student.num_layers is the assistant's depth, student.layers
the assistant layers the student keeps, student.hidden_size / num_heads / intermediate_size
the width both share.

Expected on 2 CPU cores (batch 32, max_length 64), reusing a fine-tuned teacher with
--config.teacher.workdir=<a finished teacher run>: "assistant" 2 epochs (640 steps) about
8 minutes, "student" 1 epoch about 1.5 minutes (it starts from the assistant's layers, so
close to its targets), "finetune" 3 epochs about 3-4 minutes; about 16 minutes in all with
compiles and evaluations (FLOP-scaled from the measured KD and PKD runs, not timed end to
end). Expect roughly configs/minilm_v2.py's accuracy (a guess of 65-75%; neither student has
pretrained weights), the difference being the assistant's effect at this tiny scale.
"""

from jaxdistill.config_lib import base_config, rotten_tomatoes, tiny
from jaxdistill.recipes import minilm_distil_stage as distil_stage, minilm_finetune_stage as finetune_stage


def get_config(arg: str = ""):
  c = rotten_tomatoes(base_config("minilm_ta"))
  # The assistant (stage "assistant"): the teacher's depth, the student's width, random init.
  c.student.init = "random"
  c.student.num_layers, c.student.hidden_size = 6, 192
  c.student.num_heads, c.student.intermediate_size = 6, 768
  c.student.layers = (0, 2, 4)  # the assistant layers the student starts from
  c.losses.hard_ce = 0.0
  c.losses.minilm_v2 = 1.0
  c.minilm.relation_heads = 12
  epochs = dict(assistant=2, student=1, finetune=3)
  if arg == "tiny":
    c = tiny(c)
    epochs = dict(assistant=1, student=1, finetune=1)
  c.stages = (
      distil_stage("assistant", epochs["assistant"], 3e-4),
      distil_stage("student", epochs["student"], 3e-4,
                   **{"teacher.source": "@stage:assistant", "teacher.finetune": False,
                      "student.source": "@stage:assistant", "student.init": "layers"}),
      finetune_stage("student", epochs["finetune"], 1e-4),
  )
  return c
