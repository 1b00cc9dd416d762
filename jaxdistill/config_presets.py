"""Task presets for config files: the task, model sources and schedule a config starts from.

    from jaxdistill.config_lib import base_config, rotten_tomatoes, tiny   # re-exported there
    c = rotten_tomatoes(base_config("kd"))

Each takes a base_config(...) ConfigDict and returns it changed in place. Plain Python: no JAX.
"""

from __future__ import annotations

import ml_collections


def rotten_tomatoes(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The demo task: the all-MiniLM-L6-v2 teacher and a 3-layer student on Rotten Tomatoes."""
  config.data.task = "rotten_tomatoes"
  config.data.max_length = 64
  config.teacher.source = "all-MiniLM-L6-v2"
  config.teacher.finetune = True
  config.teacher.epochs = 1  # 83% dev accuracy after one epoch; configs/finetune.py runs two
  config.teacher.lr = 5e-5
  config.student.source = "all-MiniLM-L6-v2"
  config.student.init = "layers"
  config.student.layers = (0, 2, 4)  # every other teacher layer, as DistilBERT initialises
  config.train.epochs = 2
  config.train.batch_size = 32
  config.optim.lr = 1e-4
  return config


def wnut16(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """WNUT-2016 Twitter NER (token head): the MiniLM teacher and a 3-layer student. Entity F1
  picks the best checkpoint; tweets are short, so a few epochs take minutes on CPU."""
  rotten_tomatoes(config)
  config.data.task = "wnut16"
  config.data.max_length = 128  # the longest tweet is 39 words; wordpieces stay under this
  config.teacher.epochs, config.teacher.lr = 5, 1e-4
  config.train.epochs = 5
  return config


def squad(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """SQuAD v1.1 (span head), CPU-sized: the first 3,000 training questions, 500 of our dev
  (held-out train articles) and the first 500 of the official dev set as test; windows of
  256 tokens with a 128-token stride. `:full` (configs/squad_*.py) lifts the cuts."""
  rotten_tomatoes(config)
  config.data.task = "squad"
  config.data.max_length, config.data.doc_stride = 256, 128
  config.data.max_examples, config.data.max_eval_examples = 3000, 500
  config.teacher.epochs, config.teacher.lr = 2, 1e-4
  config.train.epochs = 2
  config.train.eval_batch_size = 64
  return config


def full_squad(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """All of SQuAD at the usual 384/128 windows (a GPU or TPU run)."""
  config.data.max_length, config.data.doc_stride = 384, 128
  config.data.max_examples = config.data.max_eval_examples = 0
  config.teacher.epochs, config.train.epochs = 2, 3
  return config


def tiny_tokens(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`tiny` for the token and span tasks: a few examples, windows a question still fits in."""
  tiny(config)
  config.data.max_examples, config.data.max_eval_examples = 24, 16
  if config.data.task == "squad":
    config.data.max_length, config.data.doc_stride = 128, 32
    config.train.bucket_multiple = 128
  else:
    config.data.max_length = 48
    config.train.bucket_multiple = 48
  return config


def tiny(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks any config to a seconds-long run for tests: few examples, short sequences."""
  config.data.max_examples = 48
  config.data.max_length = 32
  config.train.bucket_multiple = 32  # one sequence shape: one compile per step function
  config.train.batch_size = 8
  config.train.eval_batch_size = 16
  config.train.epochs = 1
  config.train.log_every = 2
  config.train.checkpoint_every = 3
  config.teacher.epochs = 1
  config.report.latency_iters = 2
  config.report.latency_batch = 8
  return config
