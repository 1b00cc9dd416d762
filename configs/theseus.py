"""BERT-of-Theseus (Xu et al. 2020): fine-tune the 6-layer MiniLM teacher (stage 1), replace
its modules of 2 layers by 3 successor layers at random (stage 2, in <workdir>/replacing),
then fine-tune the 3-layer successor alone for an epoch (stage 3, in <workdir>, which it exports).
The stages come from the method (methods/theseus.py: Theseus.stages); jaxdistill/pipeline.py runs them.

  python -m jaxdistill.train --config configs/theseus.py --workdir runs/rt_theseus
  python -m jaxdistill.train --config configs/theseus.py:tiny --workdir /tmp/theseus_tiny

Replacing trains on the labels alone, with the predecessor's embeddings and classifier shared
and frozen (only the successor layers train). The optimizer is the authors' (run_glue.py of
JetRunner/BERT-of-Theseus): lr 2e-5, no warmup, no weight decay. The successor stage keeps
the embeddings, pooler and classifier frozen too (optim.train_only): the authors never train
them. The rate follows the linear curriculum p = min(1, k*t + b); the authors' k = 6e-4 from
b = 0.1 reaches 1 after 1,500 steps, more than our 2 epochs (640 steps) hold, so here b = 0.3
and k = 0.7/500 reach 1 after 500 steps. `--study theseus_authors` of jaxdistill.results runs
the authors' curriculum, 6 epochs, and no separate successor stage (their successor
fine-tuning is the same run going on at p = 1). A constant rate:
--config.theseus.scheduler=constant --config.theseus.rate=0.5. The successor layers start as
the predecessor's first three (the authors' code); --config.student.layers=0,2,4 starts each
module from its own first layer instead. docs/methods.md lists the remaining differences.
"""

from jaxdistill.config_lib import base_config, rotten_tomatoes, tiny


def get_config(arg: str = ""):
  c = rotten_tomatoes(base_config("theseus"))
  c.student.source = ""  # cut from the fine-tuned predecessor (the teacher)
  c.student.init, c.student.layers = "layers", (0, 1, 2)
  c.losses.hard_ce = 1.0  # no distillation loss: the task loss through the mixed model
  c.theseus.scheduler, c.theseus.rate, c.theseus.linear_k = "linear", 0.3, 0.7 / 500
  c.optim.lr, c.optim.warmup_ratio, c.optim.weight_decay = 2e-5, 0.0, 0.0
  # Both stages update the successor's layers only; embeddings, pooler and classifier stay
  # the predecessor's (replacing freezes them anyway; the successor stage would not).
  c.optim.train_only = ("^student/layers/",)
  c.theseus.finetune_epochs, c.theseus.finetune_lr = 1, 2e-5
  if arg == "tiny":
    c = tiny(c)
    c.theseus.finetune_epochs = 1
  return c
