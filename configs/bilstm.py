"""Distilled BiLSTM (Tang et al. 2019): fine-tune the MiniLM teacher (stage 1), augment the
train split with the paper's masking and n-gram sampling (stage "augment", written once to
<workdir>/augment/augmented.jsonl), then distil a single-layer BiLSTM on it with
alpha * CE + (1 - alpha) * ||z_teacher - z_student||^2 (stage "distil", in <workdir>).

  python -m jaxdistill.train --config configs/bilstm.py --workdir runs/rt_bilstm
  python -m jaxdistill.train --config configs/bilstm.py:tiny --workdir /tmp/bilstm_tiny

The student reads the teacher tokenizer's wordpiece ids: 300-d embeddings started from the
MiniLM's (projected onto their top principal components; the paper used word2vec), one
BiLSTM layer with 150 units per direction, a 200-unit ReLU layer, then the logits.
alpha = 0.5: losses.hard_ce = 0.5, losses.logit_mse = 0.5 * 2 (our logit_mse averages over
the 2 classes, the paper's squared norm sums them). Synthetic rows are unlabelled and carry
the distillation term alone. Adam at lr 1e-3 (the paper used Adadelta).

Budget: n_iter = 4 synthetic attempts per review (the paper: 20) gives about 50k train rows
(10,248 originals, duplicates dropped). Their teacher logits are computed once per run, at
about 100-200 reviews/s on a 2-core CPU: 4-8 minutes; then 3 epochs of the BiLSTM. About 15-20
minutes in all with a fine-tuned teacher reused (--config.teacher.workdir=<its workdir>);
raise --config.bilstm.augment_n_iter on a faster machine.
POS-guided word replacement is not implemented (no POS tagger offline; see
jaxdistill/data/augment_tang.py).
"""

from jaxdistill.config_lib import base_config, rotten_tomatoes, tiny


def get_config(arg: str = ""):
  c = rotten_tomatoes(base_config("bilstm"))
  c.student.arch = "bilstm"
  c.student.init, c.student.layers = "pretrained", ()  # the BiLSTM takes only its vocabulary and embeddings
  c.losses.hard_ce = 0.5
  c.losses.logit_mse = 0.5 * 2
  c.bilstm.augment_n_iter = 4
  c.train.epochs = 3
  c.train.batch_size = 64
  c.optim.lr = 1e-3
  c.optim.warmup_ratio = 0.05
  c.stages = (
      {"name": "augment", "run": "tang_augment"},
      {"name": "distil", "set": {"data.train_override": "@stage:augment"}},
  )
  if arg == "tiny":
    c = tiny(c)
    c.bilstm.augment_n_iter = 2
    c.bilstm.embed_dim, c.bilstm.hidden_size, c.bilstm.dense_size = 16, 8, 8
  return c
