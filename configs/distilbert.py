"""DistilBERT (Sanh et al. 2019): task-agnostic distillation on unlabelled text with the
masked-LM, soft-target and cosine losses, then fine-tuning on the task. One command, four
stages, each resumable and skipped once done:

  python -m jaxdistill.train --config configs/distilbert.py --workdir runs/rt_distilbert
  python -m jaxdistill.train --config configs/distilbert.py:tiny --workdir /tmp/distilbert_tiny

1. text (<workdir>/text): the unlabelled corpus, text.jsonl: the Rotten Tomatoes train
   reviews without their labels, or any other text with --config.distilbert.text_file=F
   (.txt: one text per line; csv/tsv/json/jsonl/parquet: column distilbert.text_column).
2. teacher_mlm (<workdir>/teacher_mlm): all-MiniLM-L6-v2 ships no MLM head, so one (dense,
   LayerNorm, bias; the decoder is tied to the word embeddings) is fitted on the corpus with
   the pretrained encoder frozen (optim.train_only=("^student/mlm_",)). Its export is the
   teacher of stage 3: the pretrained MiniLM, not a task-fine-tuned one (task-agnostic).
3. general (<workdir>/general): a 3-layer student initialised from teacher layers 0, 2, 4
   (DistilBERT's one-in-two init) and the teacher's MLM head, trained with
   5 * distil_soft_ce (T = 2) + 2 * mlm + 1 * cosine, the authors' weights, on the corpus with
   fresh BERT masks every step (15% of tokens; 80% [MASK], 10% random, 10% unchanged).
   No labels are read: the stage has no dev split and is not evaluated.
4. finetune (<workdir>): the general student fine-tuned on Rotten Tomatoes with the labels
   (hard_ce; the classifier has never trained before). The compression report compares it
   with the usual fine-tuned MiniLM teacher (teacher.finetune: <workdir>/teacher, or a shared
   one via --config.teacher.workdir), which only the report reads.

Budget (2 CPU cores, batch 32, max_length 64): the MLM terms evaluate the vocabulary-sized
head only at the masked positions (at most 10 of 64 per row, not 32 x 64 x 30522 logits), and
an MLM step still costs about twice a plain 3-layer fine-tuning step (the frozen encoder of
stage 2 is back-propagated through; stage 3 runs the 6-layer teacher). So stage 2 runs 300
steps (~one epoch of the 10,248 reviews), stage 3 400 steps (~1.25 epochs), stage 4 two
epochs (640 steps): about 20 minutes in all on a quiet machine, plus the report's teacher
fine-tuning (~5 minutes) unless --config.teacher.workdir points at a finished one.
"""

from jaxdistill.config_lib import base_config, rotten_tomatoes, tiny
from jaxdistill.recipes import unlabelled_data

NO_LOSSES = {"losses.hard_ce": 0.0, "losses.mlm": 0.0, "losses.distil_soft_ce": 0.0,
             "losses.cosine": 0.0}


def get_config(arg: str = ""):
  c = rotten_tomatoes(base_config("distilbert"))
  # The final stage's report teacher, fine-tuned there only; the MLM stages need none.
  c.teacher.finetune = False
  c.distilbert.temperature = 2.0
  head_steps, general_steps = 300, 400
  if arg == "tiny":
    c = tiny(c)
    head_steps = general_steps = 4
  c.stages = (
      {"name": "text", "run": "distilbert_text"},
      {"name": "teacher_mlm", "set": {
          **unlabelled_data("text"), **NO_LOSSES, "losses.mlm": 1.0,
          "student.init": "pretrained", "student.layers": (), "student.mlm_head": True,
          "optim.train_only": ("^student/mlm_",), "optim.lr": 1e-3,
          "train.epochs": 1, "train.max_steps": head_steps, "report.compression": False}},
      {"name": "general", "set": {
          **unlabelled_data("text"), **NO_LOSSES,
          "losses.distil_soft_ce": 5.0, "losses.mlm": 2.0, "losses.cosine": 1.0,
          "teacher.source": "@stage:teacher_mlm",
          "student.source": "@stage:teacher_mlm", "student.init": "layers",
          "student.layers": (0, 2, 4), "student.mlm_head": True,
          "optim.lr": 1e-4, "train.epochs": 2, "train.max_steps": general_steps,
          "report.compression": False}},
      {"name": "finetune", "set": {
          **NO_LOSSES, "losses.hard_ce": 1.0,
          "student.source": "@stage:general", "student.init": "pretrained", "student.layers": (),
          "teacher.finetune": True}},
  )
  return c
