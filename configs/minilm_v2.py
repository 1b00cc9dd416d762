"""MiniLMv2 (Wang et al. 2021): distil the Q-Q, K-K and V-V self-attention relations of the
fine-tuned MiniLM teacher (6 layers, width 384, 12 heads) into a student of another width
and head count (3 layers, width 192, 6 heads, random init), over 12 relation heads (teacher
relation heads of 32 = its attention heads, student relation heads of 16), on the task's
text without its labels (stage "distil"), then fine-tune it on the labels (stage "finetune").

  python -m jaxdistill.train --config configs/minilm_v2.py --workdir runs/rt_minilm_v2
  python -m jaxdistill.train --config configs/minilm_v2.py:tiny --workdir /tmp/minilm_v2_tiny

MiniLM v1 cannot train this student (6 heads vs the teacher's 12): adding
--config.losses.minilm_attention=1 stops with "MiniLM v1 needs equal head counts (teacher 12
vs student 6); use losses.minilm_v2 ...". The student shape is set by
--config.student.hidden_size / num_heads / num_layers / intermediate_size (random init);
--config.minilm.relation_heads must divide both widths, --config.minilm.teacher_layer picks
the teacher layer (MiniLMv2 uses an upper-middle one of 24-layer teachers; the last here).

Expected on 2 CPU cores (batch 32, max_length 64), reusing a fine-tuned teacher with
--config.teacher.workdir=<a finished teacher run>: stage "distil" 3 epochs (960 steps, the
teacher's forward most of each) about 10 minutes, stage "finetune" 3 epochs about 3-4 minutes,
with compiles, evaluations and the report about 15 minutes (FLOP-scaled from the measured KD
and PKD runs, not timed end to end). The student has no pretrained weights at all (its
embeddings included) and sees 10k reviews: expect far below the teacher, a guess of 65-75%
test accuracy, at an eighth of the teacher's layer FLOPs (7.3M parameters, 6.0M of them
embeddings, against the teacher's 22.7M).
"""

from jaxdistill.config_lib import base_config, rotten_tomatoes, tiny
from jaxdistill.recipes import minilm_distil_stage as distil_stage, minilm_finetune_stage as finetune_stage


def get_config(arg: str = ""):
  c = rotten_tomatoes(base_config("minilm_v2"))
  c.student.init, c.student.layers = "random", ()
  c.student.num_layers, c.student.hidden_size = 3, 192
  c.student.num_heads, c.student.intermediate_size = 6, 768
  c.losses.hard_ce = 0.0
  c.losses.minilm_v2 = 1.0
  c.minilm.relation_heads = 12
  c.minilm.teacher_layer = -1
  distil_epochs, finetune_epochs = 3, 3
  if arg == "tiny":
    c = tiny(c)
    distil_epochs, finetune_epochs = 1, 1
  c.stages = (distil_stage("distil", distil_epochs, 3e-4),
              finetune_stage("distil", finetune_epochs, 1e-4))
  return c
