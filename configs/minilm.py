"""MiniLM v1 (Wang et al. 2020): distil the last layer's self-attention distributions and
value relations of the fine-tuned 6-layer MiniLM teacher into a 3-layer student (the
teacher's pretrained layers 0, 2, 4; 12 heads, as v1 needs), on the task's text without its
labels (stage "distil", in <workdir>/distil), then fine-tune the student on the labels
(stage "finetune", in <workdir>, which exports it and writes the compression report).

  python -m jaxdistill.train --config configs/minilm.py --workdir runs/rt_minilm
  python -m jaxdistill.train --config configs/minilm.py:tiny --workdir /tmp/minilm_tiny

MiniLM distils task-agnostically on a large corpus; here the corpus is Rotten Tomatoes' 10,248
training reviews (labels unread in stage "distil"), and the targets are the fine-tuned
teacher's attention (the pretrained checkpoint has no classifier for the trainer's teacher
checks). The student starts from teacher layers rather than from scratch as in the paper:
one epoch of 10k reviews cannot pretrain a Transformer, and the same start makes this row
comparable with KD and PKD. Losses: minilm_attention + minilm_value (weights 1, 1), teacher
layer minilm.teacher_layer (-1 = last). A student with another head count is a one-line
error pointing at configs/minilm_v2.py.

Expected on 2 CPU cores (batch 32, max_length 64), reusing a fine-tuned teacher with
--config.teacher.workdir=<a finished teacher run>: stage "distil" 1 epoch (320 steps of a
teacher forward and a 3-layer student) about 6 minutes, stage "finetune" 2 epochs (640 steps)
about 7 minutes, with compiles, evaluations and the report about 15-16 minutes (a teacher
fine-tune first adds about 10-15). These are FLOP-scaled from the measured KD and PKD runs,
not timed end to end. Test accuracy should land near the fine-tuned-without-teacher student's
(about 81-82%): the attention targets re-align layers the student already has.
"""

from jaxdistill.config_lib import base_config, rotten_tomatoes, tiny
from jaxdistill.recipes import minilm_distil_stage as distil_stage, minilm_finetune_stage as finetune_stage


def get_config(arg: str = ""):
  c = rotten_tomatoes(base_config("minilm"))  # student: pretrained MiniLM layers (0, 2, 4)
  c.losses.hard_ce = 0.0
  c.losses.minilm_attention = 1.0
  c.losses.minilm_value = 1.0
  c.minilm.teacher_layer = -1  # v1 distils the teacher's last layer
  distil_epochs, finetune_epochs = 1, 2
  if arg == "tiny":
    c = tiny(c)
    distil_epochs, finetune_epochs = 1, 1
  c.stages = (distil_stage("distil", distil_epochs, 1e-4),
              finetune_stage("distil", finetune_epochs, 1e-4))
  return c
