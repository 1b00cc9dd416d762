"""MobileBERT (Sun et al. 2020): a bottleneck student as deep as the 6-layer MiniLM teacher,
trained by progressive layer-wise knowledge transfer, then on the predictions.

  python -m jaxdistill.train --config configs/mobilebert.py --workdir runs/rt_mobilebert
  python -m jaxdistill.train --config configs/mobilebert.py:tiny --workdir /tmp/mobilebert_tiny

Stages, one command (each resumable; finished stages are skipped on a rerun):
  teacher      fine-tune MiniLM on the task (in <workdir>/teacher, or --config.teacher.workdir)
  layer0..5    stage l trains student block l alone (blocks below frozen as the previous stage
               left them; layer0 also trains the embeddings, copied from the teacher) on the
               feature-map (x100), mean (x5000), variance (x5) and attention (x1) transfer
               losses of layer l, 150 steps each (train.max_steps) at lr 1e-3
  prediction   every parameter trains on 0.5 hard CE + 0.5 KD (T = 2) for 2 epochs at lr 1e-4
               (the paper's pre-training distillation and fine-tuning, with the task's text as
               the transfer data); exported to <workdir>/export with the compression report

The student (jaxdistill/models/mobilebert.py): inter-block width 384 (the teacher's, so
feature maps compare without a projection), intra-block width 96 (the paper's 4:1 ratio),
12 heads of width 8 (attention transfer compares the teacher's 12 heads one to one), 4
stacked FFNs of width 384; 14.9M parameters, 3.0M outside the embeddings (teacher 22.7M / 10.8M).
Its embeddings, pooler and classifier start as the fine-tuned teacher's.

Budget on a 2-core CPU with the teacher already fine-tuned (--config.teacher.workdir=DIR):
about 20-25 minutes. A layer stage's step runs the teacher and the student up to layer l
(XLA drops the layers above), from ~0.1 s at layer 0 to ~0.5 s at layer 5 (about half a
6-layer BERT fine-tuning step), so the 6 x 150 layer steps take ~5 minutes plus ~1 minute
per stage of compiling, evaluating and exporting; the prediction stage caches the teacher's
logits (~2-3 minutes), then 640 steps of ~0.35 s, evaluations and the report (~8 minutes in
all). Add about 7 minutes when the teacher is fine-tuned first. Expect the layer losses to
fall within each stage (loss/mobilebert_feature_map, e.g. layer 0 from ~0.47 to ~0.26 in
its first 25 steps) and the prediction stage to score a few points under the teacher; the
layer stages' dev accuracy is meaningless (their classifier is the teacher's, untrained on
the student's features).
"""

from jaxdistill.config_lib import base_config, rotten_tomatoes, tiny

TRANSFER_LOSSES = dict(mobilebert_feature_map=100.0, mobilebert_mean=5000.0,
                       mobilebert_variance=5.0, mobilebert_attention=1.0)


def layer_stages(num_layers: int, steps: int) -> list[dict]:
  """One stage per student block: stage l trains block l (and the embeddings at l = 0) on
  the transfer losses of layer l, starting from stage l-1's export."""
  stages = []
  for l in range(num_layers):
    train_only = ("student/embeddings/", "student/layers/0/") if l == 0 else (f"student/layers/{l}/",)
    s = {"mobilebert.transfer_layer": l, "optim.train_only": train_only, "train.max_steps": steps}
    if l > 0:
      s["student.source"] = f"@stage:layer{l - 1}"
    stages.append({"name": f"layer{l}", "set": s})
  return stages


def get_config(arg: str = ""):
  c = rotten_tomatoes(base_config("mobilebert"))
  c.student.arch = "mobilebert"
  c.student.source = ""  # the fine-tuned teacher: embeddings, pooler and classifier copied
  c.student.init, c.student.layers = "random", ()
  c.mobilebert.num_layers = 2 if arg == "tiny" else 6
  # Layer stages: transfer losses only; the classifier is not trained, so no dev-based
  # selection and no compression report until the prediction stage.
  c.losses.hard_ce = 0.0
  for name, weight in TRANSFER_LOSSES.items():
    c.losses[name] = weight
  c.optim.lr = 1e-3  # a fresh block: 1e-3 beat 5e-4 on layer 0 in a 25-step probe
  c.train.select_best = False
  c.report.compression = False
  layer_steps = 2 if arg == "tiny" else 150
  prediction = {f"losses.{k}": 0.0 for k in TRANSFER_LOSSES}
  prediction.update({
      "losses.hard_ce": 0.5, "losses.kd": 0.5, "mobilebert.transfer_layer": -1,
      "student.source": f"@stage:layer{c.mobilebert.num_layers - 1}",
      "optim.lr": 1e-4, "train.epochs": 1 if arg == "tiny" else 2, "train.select_best": True,
      "report.compression": True})
  c.kd.temperature = 2.0
  c.stages = tuple(layer_stages(c.mobilebert.num_layers, layer_steps)) + (
      {"name": "prediction", "set": prediction},)
  return tiny(c) if arg == "tiny" else c
