"""TinyBERT (Jiao et al. 2020): task-specific distillation of the fine-tuned 6-layer MiniLM
into a 4-layer student that is also narrower (width 192 against 384, so the hidden and
embedding losses go through learned projections W_h, W_e), on the paper's augmented data.
One command, four stages, each resumable and skipped once done:

  python -m jaxdistill.train --config configs/tinybert.py --workdir runs/rt_tinybert
  python -m jaxdistill.train --config configs/tinybert.py:tiny --workdir /tmp/tinybert_tiny

1. mlm_head (<workdir>/mlm_head): all-MiniLM-L6-v2 ships no masked-LM head, and augmentation
   needs one: a head (dense, LayerNorm, bias; decoder tied to the word embeddings) is fitted
   on the train reviews with the pretrained encoder frozen (optim.train_only), `mlm` loss only.
2. augment (<workdir>/augment/train_augmented.jsonl): Algorithm 1 of the paper with stage 1's
   model (jaxdistill/data/augment_tinybert.py): every eligible word is replaced with
   probability 0.4 by one of its K = 15 candidates (masked-LM top-K for single-piece words,
   nearest word embeddings otherwise); the originals stay in the file with their labels.
3. intermediate (<workdir>/intermediate): a randomly initialised student (the teacher's
   vocabulary and tokenizer) learns the teacher's embedding outputs, hidden states and
   pre-softmax attention scores on the augmented data: tinybert_embedding + tinybert_hidden +
   tinybert_attention, layer map g(m) = floor(m * 6 / 4): student layers 1-4 <- teacher 1, 3, 4, 6.
   No label is read; the classifier does not train, so nothing is selected by dev accuracy.
4. prediction (<workdir>): the intermediate student learns the teacher's predictions on the
   same data, tinybert_prediction (soft cross-entropy at T = 1, the paper's); exported with
   the compression report. --config.losses.hard_ce=0.5 also adds the labels.

The teacher is MiniLM fine-tuned on the task once (<workdir>/teacher, or a shared one via
--config.teacher.workdir), before stage 1; stages 3 and 4 read it.

Budget (2 CPU cores, batch 32, max_length 64). Costs were measured as CPU-seconds per step
relative to a teacher fine-tuning step (~1.4 s, ~23 reviews/s on 2 cores). The paper's
N_a = 20 copies per example would mean ~9 masked-LM forward passes of the 6-layer model per
review (one per single-piece word some copy replaces) and a 21x larger train set: hours
here. Instead:
  mlm_head       80 steps at lr 3e-3 (a fresh head on a frozen encoder; ~1/4 epoch; a step
                 costs about a teacher step), plus the MiniLM's dev/test passes: ~3.5 min
  augment        N_a = 1 copy of each of the first 5,000 reviews (tinybert.augment_examples;
                 the split is shuffled), all 10,248 originals kept: ~17,500 masked-LM passes
                 at ~70/s, ~15,200 rows: ~5 min
  intermediate   400 steps (~0.85 epoch of the rows; the teacher's forward with hidden states
                 and attention scores every step, ~0.7 s/step): ~5.5 min
  prediction     1 epoch (the teacher's logits computed once over the rows and cached,
                 ~0.45 s/step), the compression report: ~7.5 min
About 22 minutes with the teacher already fine-tuned (--config.teacher.workdir); add ~7
to fine-tune it. More augmentation: --config.tinybert.augment_examples=0 (every review:
+~4.5 min of passes, +~2 min of prediction) or augment_n=2 (+~2.5 min of passes, and the
prediction stage grows with the rows).
"""

from jaxdistill.config_lib import base_config, rotten_tomatoes, tiny

NO_LOSSES = {"losses.hard_ce": 0.0, "losses.mlm": 0.0, "losses.tinybert_embedding": 0.0,
             "losses.tinybert_hidden": 0.0, "losses.tinybert_attention": 0.0,
             "losses.tinybert_prediction": 0.0}


def get_config(arg: str = ""):
  c = rotten_tomatoes(base_config("tinybert"))
  # The student of stages 3 and 4: random, 4 layers, width 192, 12 heads (the teacher's
  # count, which the attention loss needs), FFN 768; vocabulary and tokenizer from MiniLM.
  c.student.source, c.student.init, c.student.layers = "all-MiniLM-L6-v2", "random", ()
  c.student.num_layers, c.student.hidden_size = 4, 192
  c.student.num_heads, c.student.intermediate_size = 12, 768
  c.tinybert.temperature = 1.0
  c.tinybert.layer_map = "uniform"
  c.tinybert.augment_n, c.tinybert.augment_p, c.tinybert.augment_k = 1, 0.4, 15
  c.tinybert.augment_seed, c.tinybert.augment_examples = 0, 5000
  # The last stage's losses (every stage sets its own).
  c.losses.hard_ce = 0.0
  c.losses.tinybert_prediction = 1.0
  head_steps, intermediate_steps = 80, 400
  if arg == "tiny":
    c = tiny(c)
    c.student.num_layers, c.student.hidden_size, c.student.intermediate_size = 2, 96, 192
    c.tinybert.augment_n, c.tinybert.augment_examples = 2, 0
    head_steps, intermediate_steps = 4, 0
  augmented = {"data.train_override": "@stage:augment"}
  c.stages = (
      {"name": "mlm_head", "set": {
          **NO_LOSSES, "losses.mlm": 1.0,
          "student.source": c.teacher.source, "student.init": "pretrained",
          "student.mlm_head": True, "optim.train_only": ("^student/mlm_",), "optim.lr": 3e-3,
          "train.max_steps": head_steps, "train.select_best": False,
          "report.compression": False}},
      {"name": "augment", "run": "tinybert_augment",
       "set": {"tinybert.augment_model": "@stage:mlm_head"}},
      {"name": "intermediate", "set": {
          **augmented, **NO_LOSSES, "losses.tinybert_embedding": 1.0,
          "losses.tinybert_hidden": 1.0, "losses.tinybert_attention": 1.0,
          "optim.lr": 5e-4, "train.epochs": 1, "train.max_steps": intermediate_steps,
          "train.select_best": False, "report.compression": False}},
      {"name": "prediction", "set": {
          **augmented, "student.source": "@stage:intermediate", "student.init": "pretrained",
          "optim.lr": 1e-4, "train.epochs": 1}},
  )
  return c
