"""Distilled BiLSTM (Tang et al. 2019, "Distilling Task-Specific Knowledge from BERT into
Simple Neural Networks"): a single-layer BiLSTM student (jaxdistill/models/bilstm.py) over
the teacher tokenizer's ids, trained on the paper's augmented transfer set
(jaxdistill/data/augment_tang.py) with

    L = alpha * CE(z_student, y) + (1 - alpha) * ||z_teacher - z_student||_2^2

as the existing loss terms: `losses.hard_ce = alpha` and `losses.logit_mse = (1 - alpha) * C`
(our logit_mse averages over the C classes, the paper's norm sums them). Synthetic rows are
unlabelled (`data.train_override`: label -1), so they carry the distillation term alone.
Only the teacher's logits are read, so the trainer computes them once per run over the
augmented train split (`train.cache_teacher_logits`). configs/bilstm.py chains the stages.

This module defines no loss term of its own; it gives the `bilstm` config section, how the
student is built, and the stage kind "tang_augment".

Word embeddings (`bilstm.embed_init`): the paper starts from 300-d word2vec vectors, which
are not available offline and do not cover wordpieces. "teacher" (the default) starts from
the student source's (the pretrained MiniLM's) 384-d wordpiece embeddings, centred and
projected onto their top `embed_dim` principal components (embed_dim = 384: no projection),
then rescaled to unit standard deviation, the scale of the "random" start (N(0, 1), as
torch.nn.Embedding). Every other parameter starts fresh.
"""

from __future__ import annotations

import logging

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxdistill.data import augment_tang
from jaxdistill.methods.base import register, register_stage_kind, register_student_arch
from jaxdistill.methods.distill import Distill
from jaxdistill.models import bilstm, registry
from jaxdistill.models.hf_convert import normalize_hf_keys
from jaxdistill.models.hub import read_hf_config, read_hf_weights, resolve_model_dir

log = logging.getLogger(__name__)

CONFIG = dict(
    embed_dim=300,        # the paper's word2vec width
    hidden_size=150,      # per direction (the paper's single-sentence model)
    dense_size=200,       # the ReLU layer before the logits
    dropout=0.1,
    embed_init="teacher",  # teacher: PCA of the source's word embeddings | random
    # The transfer-set augmentation (stage kind "tang_augment"); the paper: 0.1, 0.25, 20.
    augment_p_mask=0.1, augment_p_ng=0.25, augment_n_iter=20, augment_seed=0,
)
register_stage_kind("tang_augment")(augment_tang.runner)
register("bilstm")(Distill)  # the paper's loss is hard_ce + logit_mse (methods/kd.py)
EMBED_INITS = ("teacher", "random")


def projected_embeddings(table: np.ndarray, dim: int) -> np.ndarray:
  """[V, D] word embeddings -> [V, dim]: centred, projected onto the top `dim` principal
  components (none when dim == D), rescaled to unit standard deviation."""
  x = np.asarray(table, np.float64)
  x = x - x.mean(axis=0)
  if dim > x.shape[1]:
    raise ValueError(f"bilstm.embed_dim={dim} is wider than the source's {x.shape[1]}-d word "
                     f"embeddings; use bilstm.embed_dim <= {x.shape[1]} or bilstm.embed_init=random")
  if dim < x.shape[1]:
    # Eigenvectors of the D x D covariance: the principal directions without an SVD of the
    # whole [V, D] table.
    _, vecs = np.linalg.eigh(x.T @ x)
    x = x @ vecs[:, ::-1][:, :dim]
  return (x / x.std()).astype(np.float32)


def source_word_embeddings(model_dir) -> np.ndarray:
  weights = normalize_hf_keys(read_hf_weights(model_dir))
  key = "embeddings.word_embeddings.weight"
  if key not in weights:
    raise ValueError(f"{model_dir} has no {key}; set bilstm.embed_init=random or point "
                     "student.source at a BERT checkpoint")
  return weights[key]


@register_student_arch("bilstm")
def build_student(config, task, source: str, head: dict):
  """(BiLSTMConfig, params, fresh param names). `source` is a BiLSTM checkpoint (loaded, e.g.
  an earlier stage's export) or a BERT checkpoint, whose vocabulary (and, with
  embed_init=teacher, word embeddings) the new student takes."""
  model_dir = resolve_model_dir(source)
  hf = read_hf_config(model_dir)
  kind = registry.arch_of_checkpoint(hf)
  if kind == "bilstm":
    model, fresh = bilstm.load(model_dir, hf, seed=config.seed, head=head, dtype=config.train.dtype)
    return model.config, bilstm.params_of(model), fresh
  if kind != "bert":
    raise ValueError(f"student.arch=bilstm cannot start from a {kind} checkpoint ({source}); "
                     "point student.source at a BERT or BiLSTM checkpoint")
  b = config.bilstm
  if b.embed_init not in EMBED_INITS:
    raise ValueError(f"bilstm.embed_init={b.embed_init!r}; use one of {', '.join(EMBED_INITS)}")
  cfg = bilstm.BiLSTMConfig(vocab_size=hf["vocab_size"], embed_dim=b.embed_dim,
                            hidden_size=b.hidden_size, dense_size=b.dense_size, dropout=b.dropout,
                            pad_token_id=hf.get("pad_token_id", 0) or 0, dtype=config.train.dtype,
                            **bilstm._head_changes(head))
  params = bilstm.params_of(bilstm.BiLSTM(cfg, rngs=nnx.Rngs(config.seed)))
  fresh = sorted(bilstm.flatten(params))
  if b.embed_init == "teacher":
    table = projected_embeddings(source_word_embeddings(model_dir), b.embed_dim)
    params["embeddings"]["word"]["embedding"] = jnp.asarray(table, cfg.params_dtype)
    fresh.remove("embeddings.word.embedding")
    log.info("BiLSTM word embeddings: the top %d principal components of %s's", b.embed_dim, source)
  return cfg, params, fresh
