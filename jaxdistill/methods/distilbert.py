"""DistilBERT's task-agnostic distillation (Sanh et al. 2019) as loss terms and a text stage.

Terms (`config.losses.<name>`; the paper's weights are distil_soft_ce 5, mlm 2, cosine 1):
- `mlm`: BERT's dynamic masking, done inside the jitted step by a `prepare` hook (so every
  step draws new masks from (seed, step) and the student and the teacher read the same
  masked ids), and the student's masked-LM cross-entropy at the selected positions.
- `distil_soft_ce`: the soft-target loss between the teacher's and the student's MLM
  distributions over the vocabulary at temperature T, at the selected positions only:
  T^2 * KL(p_t || p_s), their KLDivLoss, which has the gradients of the paper's cross-entropy
  form. jaxdistill always restricts it (the MLM heads run at the selected positions only, see
  head_logits); the authors' train.py does so only with `--restrict_ce_to_mask`, which is off
  by default and in their README's command: their default averages it over every real token.
- `cosine`: 1 - cos between the last hidden states of student and teacher at real tokens.

Masking follows BERT (Devlin et al. 2019): of each row's real, non-special tokens,
max(1, round(mask_prob * n)) are selected (never [CLS], [SEP], [PAD], [UNK] or [MASK]); a
selected token becomes [MASK] with probability 0.8, a uniformly random id with 0.1, and
stays itself with 0.1. `batch["mlm_labels"]` holds the original id there and -1 elsewhere.
The MLM heads run at those positions only (`head_logits`), never on all [B, S, V] logits.

`distilbert.mlm_smoothing` = s > 0 is the rare-token emphasis of the authors' train.py (from
XLM; their default s = 0.7): a token is selected with probability proportional to
max(count, 1)^-s, count = its occurrences in the stage's training corpus (as tokenised for the
stage, counted once on the host), special tokens 0. As theirs (torch.multinomial without
replacement) the draw is successive sampling without replacement, done here as the
exponential race: the k smallest of E_i / w_i, E_i = -log(1 - u_i) ~ Exp(1), are a weighted
draw of k without replacement, and with equal weights they are the k smallest u_i, the uniform
selection. s = 0 keeps the uniform code path and its exact draws. Unlike theirs, the count
stays per row (BERT's max(1, round(0.15 n)), so the weights choose which tokens of a row);
theirs draws ceil(0.15 * the batch's real tokens) over the whole batch, so a row of rare
tokens gets more than 15% and a row of common ones less.

Stage kind `distilbert_text` (`register_stage_kind`) writes the unlabelled corpus the MLM stages
read: `distilbert.text_file` (a .txt file, one text per line, or a csv/tsv/json/jsonl/parquet
file with the column `distilbert.text_column`) or, when empty, the task's train texts
without their labels.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from pathlib import Path
from typing import Optional

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxdistill import data as data_lib
from jaxdistill import distributed, losses
from jaxdistill.core.errors import ConfigError
from jaxdistill.core.outputs import Collect
from jaxdistill.data.config import DataSpec
from jaxdistill.data.errors import DataError
from jaxdistill.data.files import read_table, require_columns
from jaxdistill.data.tokenization import tokenize_split
from jaxdistill.methods.base import (Inputs, Term, graphdef_of, register, register_stage_kind,
                                     register_term)
from jaxdistill.methods.distill import Distill
from jaxdistill.models import hub

log = logging.getLogger(__name__)

NOT_SELECTED = -1  # mlm_labels value at positions that are not predicted

# The ids are those of BERT's uncased vocabulary, which all-MiniLM-L6-v2 uses; a run checks
# them against the student's tokenizer when the step is traced (`check_token_ids`).
CONFIG = dict(
    temperature=2.0,          # distil_soft_ce's T (the authors' 2.0)
    mask_prob=0.15,           # share of each row's real non-special tokens that is predicted
    mask_token_prob=0.8,      # of those: replaced by [MASK] ...
    random_token_prob=0.1,    # ... by a random id; the rest stays unchanged
    mask_token_id=103,        # [MASK]
    special_token_ids=(0, 100, 101, 102, 103),  # [PAD] [UNK] [CLS] [SEP] [MASK]: never selected
    mlm_smoothing=0.0,        # select tokens with p ~ count^-s (HF's train.py: 0.7); 0 = uniform
    text_file="",             # the distilbert_text stage's corpus; "" = the task's train texts
    text_column="text",       # its column (csv/tsv/json/jsonl/parquet)
)


# ---- Masking (the prepare hook) --------------------------------------------------------------
def select_positions(key, eligible: jax.Array, mask_prob: float, weights: jax.Array | None = None
                     ) -> jax.Array:
  """[B, S] bool: max(1, round(mask_prob * n)) of each row's n eligible positions (0 when
  n = 0), without replacement: uniformly, as BERT's create_pretraining_data picks them, or
  with [B, S] `weights` by successive weighted sampling (the exponential race, module docs)."""
  if weights is not None:
    eligible = eligible & (weights > 0)  # weight 0 (special ids) is never drawn, as in HF
  n = jnp.sum(eligible, axis=1)
  k = jnp.where(n > 0, jnp.maximum(1, jnp.floor(mask_prob * n + 0.5).astype(jnp.int32)), 0)
  u = jax.random.uniform(key, eligible.shape)
  if weights is None:
    # Random scores, ineligible positions last: a row's k lowest scores are its selection.
    scores = jnp.where(eligible, u, 2.0)
  else:
    # -log1p(-u) rises with u, so equal weights rank exactly as u does.
    scores = jnp.where(eligible, -jnp.log1p(-u) / jnp.where(eligible, weights, 1.0), jnp.inf)
  rank = jnp.argsort(jnp.argsort(scores, axis=1), axis=1)
  return eligible & (rank < k[:, None])


def mask_tokens(key, input_ids: jax.Array, attention_mask: jax.Array, d, vocab_size: int,
                token_probs=None) -> tuple[jax.Array, jax.Array]:
  """(masked input ids, mlm labels) for a batch; `d` is the config.distilbert section;
  `token_probs`: None (uniform selection) or the [V] selection weights of `corpus_token_probs`."""
  k_select, k_action, k_random = jax.random.split(key, 3)
  special = jnp.isin(input_ids, jnp.asarray(tuple(d.special_token_ids), input_ids.dtype))
  eligible = (attention_mask != 0) & ~special
  weights = None if token_probs is None else jnp.asarray(token_probs, jnp.float32)[input_ids]
  selected = select_positions(k_select, eligible, d.mask_prob, weights)
  u = jax.random.uniform(k_action, input_ids.shape)
  to_mask = selected & (u < d.mask_token_prob)
  to_random = selected & (u >= d.mask_token_prob) & (u < d.mask_token_prob + d.random_token_prob)
  random_ids = jax.random.randint(k_random, input_ids.shape, 0, vocab_size, input_ids.dtype)
  masked = jnp.where(to_mask, jnp.asarray(d.mask_token_id, input_ids.dtype),
                     jnp.where(to_random, random_ids, input_ids))
  return masked, jnp.where(selected, input_ids, NOT_SELECTED)


def check_probs(d) -> None:
  if not 0.0 < d.mask_prob <= 1.0:
    raise ValueError(f"distilbert.mask_prob={d.mask_prob} must be in (0, 1]; BERT uses 0.15")
  if d.mask_token_prob < 0 or d.random_token_prob < 0 or d.mask_token_prob + d.random_token_prob > 1:
    raise ValueError(f"distilbert.mask_token_prob={d.mask_token_prob} and random_token_prob="
                     f"{d.random_token_prob} must be >= 0 and sum to <= 1; BERT uses 0.8 and 0.1")
  if not (math.isfinite(d.mlm_smoothing) and d.mlm_smoothing >= 0):
    raise ConfigError(f"distilbert.mlm_smoothing={d.mlm_smoothing} must be >= 0; 0 selects "
                      "uniformly, the DistilBERT authors use 0.7")


@functools.lru_cache(maxsize=8)
def _tokenizer_ids(source: str) -> tuple[int, tuple[int, ...]]:
  tok = hub.load_tokenizer(source)
  return tok.mask_token_id, tuple(tok.all_special_ids)


def check_token_ids(d, vocab_size: int, source: str) -> None:
  """[MASK] and the special ids in `d` (the distilbert section) must be the student's
  tokenizer's: a wrong [MASK] id would train on noise without any error."""
  ids = (d.mask_token_id, *d.special_token_ids)
  if not all(0 <= i < vocab_size for i in ids):
    raise ValueError(f"distilbert.mask_token_id / special_token_ids {ids} must be ids of the "
                     f"{vocab_size}-token vocabulary; set them from the tokenizer")
  if not source or source.startswith("@stage:"):
    return
  mask_id, specials = _tokenizer_ids(str(source))
  missing = sorted(set(specials) - set(d.special_token_ids))
  if mask_id != d.mask_token_id or missing:
    raise ValueError(f"the tokenizer of {source} has [MASK]={mask_id} and special ids "
                     f"{sorted(specials)}, but distilbert.mask_token_id={d.mask_token_id} and "
                     f"special_token_ids={tuple(d.special_token_ids)}; set "
                     f"--config.distilbert.mask_token_id={mask_id} "
                     f"--config.distilbert.special_token_ids={','.join(map(str, sorted(specials)))}")


@dataclasses.dataclass(frozen=True)
class Masking:
  """BERT's dynamic masking settings (the distilbert section), the tokenizer they are
  checked against and, with mlm_smoothing > 0, the stage's data whose token counts weight
  the selection."""
  mask_prob: float = 0.15
  mask_token_prob: float = 0.8
  random_token_prob: float = 0.1
  mask_token_id: int = 103
  special_token_ids: tuple = (0, 100, 101, 102, 103)
  tokenizer_source: str = ""
  mlm_smoothing: float = 0.0
  corpus: Optional[DataSpec] = None  # hashable: the counts are cached per (corpus, tokenizer)

  @classmethod
  def from_config(cls, config) -> "Masking":
    d = config.distilbert
    smoothing = float(d.mlm_smoothing)
    # Only read (at trace time) when smoothing is on: s = 0 touches no data here.
    corpus = data_lib.parse_data_config(config.data) if smoothing > 0 else None
    return cls(float(d.mask_prob), float(d.mask_token_prob), float(d.random_token_prob),
               int(d.mask_token_id), tuple(int(i) for i in d.special_token_ids),
               str(config.student.source or config.teacher.source), smoothing, corpus)


# ---- Token counts for mlm_smoothing (host side, once per corpus and tokenizer) -------------
def token_counts(input_ids: np.ndarray, lengths: np.ndarray, vocab_size: int) -> np.ndarray:
  """[vocab_size] int64: occurrences of each id among the real tokens (specials included, as
  HF's token_counts.py counts them) of [N, S] right-padded ids."""
  real = np.arange(input_ids.shape[1])[None, :] < np.asarray(lengths)[:, None]
  return np.bincount(np.asarray(input_ids)[real].astype(np.int64), minlength=vocab_size)


def smoothed_token_probs(counts, smoothing: float, special_token_ids) -> np.ndarray:
  """[V] float32 selection probabilities, as HF's train.py builds `token_probs`:
  max(count, 1)^-smoothing, 0 at the special ids, here normalised to sum 1 (a scale that
  changes no draw)."""
  w = np.maximum(np.asarray(counts, np.float64), 1.0) ** -float(smoothing)
  w[np.asarray(tuple(special_token_ids), np.int64)] = 0.0
  return (w / w.sum()).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _corpus_counts(corpus: DataSpec, tokenizer_source: str) -> np.ndarray:
  """Counts over the train split the stage reads, tokenised as the stage tokenises it (its
  tokenizer and data.max_length), so truncated tails never count."""
  if not tokenizer_source or tokenizer_source.startswith("@stage:"):
    raise ConfigError(f"distilbert.mlm_smoothing needs the stage's tokenizer to count tokens, "
                      f"got student/teacher source {tokenizer_source!r}; set student.source")
  tokenizer = hub.load_tokenizer(tokenizer_source)
  train = data_lib.load_raw_task(corpus).splits["train"]
  split = tokenize_split(train, tokenizer, corpus.max_length)
  counts = token_counts(split.input_ids, split.lengths, len(tokenizer))
  log.info("mlm_smoothing: counted %d tokens of %d texts (%d distinct ids)", int(counts.sum()),
           len(train), int((counts > 0).sum()))
  return counts


def corpus_token_probs(masking: Masking, vocab_size: int) -> np.ndarray:
  """The [vocab_size] selection probabilities of `masking`'s corpus (cached on the host)."""
  counts = _corpus_counts(masking.corpus, masking.tokenizer_source)
  if counts.size > vocab_size:
    raise ConfigError(f"the tokenizer of {masking.tokenizer_source} has {counts.size} ids but the "
                      f"model's vocabulary {vocab_size}; use the model's own tokenizer")
  # Ids past the tokenizer's never occur in the input: their weight is never read.
  counts = np.pad(counts, (0, vocab_size - counts.size))
  return smoothed_token_probs(counts, masking.mlm_smoothing, masking.special_token_ids)


def prepare_masked_lm(batch: dict, key, masking: Masking, student_cfg) -> dict:
  """The `prepare` hook of `mlm` and `distil_soft_ce`: masks once per step (the second term
  to run finds `mlm_labels` and leaves the batch alone), before both forward passes. Both
  terms draw from the one stream "prepare/mlm_mask", so the masks do not depend on which of
  them (or which other terms) are on."""
  if "mlm_labels" in batch:
    return batch
  check_probs(masking)
  check_token_ids(masking, student_cfg.vocab_size, masking.tokenizer_source)  # at trace time
  probs = (corpus_token_probs(masking, student_cfg.vocab_size) if masking.mlm_smoothing > 0
           else None)  # a [V] constant of the traced step
  ids, labels = mask_tokens(key, batch["input_ids"], batch["attention_mask"], masking,
                            student_cfg.vocab_size, probs)
  return {**batch, "input_ids": ids, "mlm_labels": labels}


# ---- Loss terms --------------------------------------------------------------------------------
# The MLM head runs at the selected positions only: [B, K, V] logits with K = the most a row
# of this length can select (10 of 64 tokens), not [B, S, V]. The vocabulary-sized matmul and
# softmaxes are most of a general-distillation step, so this is several times faster; the
# loss values are those of the full logits (tested). The terms still declare
# Collect(mlm_logits=True): that makes build load the MLM heads, and the full logits the
# forward would return are never read, so XLA drops them from the compiled step.
def max_selected(seq_len: int, mask_prob: float) -> int:
  """The most positions `select_positions` picks in a row of `seq_len` tokens."""
  return max(1, int(mask_prob * seq_len + 0.5))


def selected_positions(labels: jax.Array, mask_prob: float) -> tuple[jax.Array, jax.Array]:
  """([B, K] positions of each row's selected tokens, padded with unselected ones; [B, K] valid)."""
  k = min(labels.shape[1], max_selected(labels.shape[1], mask_prob))
  order = jnp.argsort(labels == NOT_SELECTED, axis=1, stable=True)[:, :k]  # selected first
  return order, jnp.take_along_axis(labels, order, axis=1) != NOT_SELECTED


@functools.lru_cache(maxsize=16)
def _graphdef(cfg):
  return graphdef_of(cfg)


def head_logits(params, cfg, hidden: jax.Array, positions: jax.Array) -> jax.Array:
  """The model's own MLM head (BertModel.mlm_logits) on hidden[b, positions[b, k]]: [B, K, V]."""
  if params is None or not cfg.mlm_head:
    raise ValueError("the MLM loss terms need a model with an MLM head and its params "
                     "(student.mlm_head=True; Inputs.student_params / teacher_params)")
  picked = jnp.take_along_axis(hidden, positions[..., None], axis=1)
  return nnx.merge(_graphdef(cfg), params).mlm_logits(picked)


MLM = Collect(mlm_logits=True)
# `cosine` reads last_hidden, which every forward returns; it asks for hidden_states only so
# that its teacher Collect differs from Collect(), which would let the loop replace the
# teacher's forward by cached logits (train.cache_teacher_logits). Unused outputs cost nothing
# under jit.
HIDDEN = Collect(hidden_states=True)


@dataclasses.dataclass(frozen=True)
class _MaskedTerm(Term):
  masking: Masking = Masking()
  stream = "mlm_mask"
  student = MLM

  @classmethod
  def from_config(cls, config):
    return cls(Masking.from_config(config))

  def prepare(self, batch: dict, key, student_cfg) -> dict:
    return prepare_masked_lm(batch, key, self.masking, student_cfg)

  def selected(self, x: Inputs):
    positions, valid = selected_positions(x.batch["mlm_labels"], self.masking.mask_prob)
    student = head_logits(x.student_params, x.student_cfg, x.student.last_hidden, positions)
    return positions, valid, student


@register_term("mlm")
@dataclasses.dataclass(frozen=True)
class MaskedLM(_MaskedTerm):
  doc = "DistilBERT/BERT masked-LM cross-entropy at dynamically masked positions"

  def __call__(self, x: Inputs) -> jax.Array:
    positions, valid, logits = self.selected(x)
    labels = jnp.take_along_axis(x.batch["mlm_labels"], positions, axis=1)
    return losses.mlm_cross_entropy_loss(logits, labels, mask=valid, ignore_index=NOT_SELECTED,
                                         example_weight=x.batch["example_weight"])


@register_term("distil_soft_ce")
@dataclasses.dataclass(frozen=True)
class DistilSoftCE(_MaskedTerm):
  temperature: float = 2.0
  doc = "DistilBERT L_ce: T^2 KL between MLM distributions at masked positions"
  teacher = MLM
  reads_teacher_logits = False

  @classmethod
  def from_config(cls, config):
    return cls(Masking.from_config(config), float(config.distilbert.temperature))

  def __call__(self, x: Inputs) -> jax.Array:
    positions, valid, student = self.selected(x)
    teacher = head_logits(x.teacher_params, x.teacher_cfg, x.teacher.last_hidden, positions)
    return losses.kd_kl_loss(student, jax.lax.stop_gradient(teacher), self.temperature,
                             scale_by_t2=True, mask=valid, example_weight=x.batch["example_weight"])


@register_term("cosine")
@dataclasses.dataclass(frozen=True)
class Cosine(Term):
  doc = "DistilBERT L_cos: 1 - cos of the last hidden states at real tokens"
  student = HIDDEN
  teacher = HIDDEN
  reads_teacher_logits = False

  def __call__(self, x: Inputs) -> jax.Array:
    return losses.cosine_embedding_loss(x.student.last_hidden, x.teacher.last_hidden,
                                        x.batch["attention_mask"],
                                        example_weight=x.batch["example_weight"])


register("distilbert")(Distill)  # the recipe's label: the composite method runs its terms


# ---- The unlabelled corpus (stage kind distilbert_text) --------------------------------------
def read_texts(path: str, column: str) -> list[str]:
  """Texts of a .txt file (one per non-empty line) or of `column` of a table file."""
  if path.lower().endswith(".txt"):
    if not os.path.isfile(path):
      raise DataError(f"distilbert.text_file {path!r} does not exist; fix the path")
    with open(path, encoding="utf-8") as f:
      return [line.strip() for line in f if line.strip()]
  columns, _ = read_table(path, "distilbert.text_file")
  require_columns(columns, [column], where=f"distilbert.text_file {path!r}",
                  config_key="distilbert.text_column")  # names the key to set
  return [str(v).strip() for v in columns[column] if v is not None and str(v).strip()]


def task_texts(data_config) -> list[str]:
  """The task's train texts, labels dropped; both segments of a pair task, as separate rows."""
  train = data_lib.load_raw_task(data_config).splits["train"]
  return [t for t in list(train.texts) + list(train.text_pairs or []) if t.strip()]


@register_stage_kind("distilbert_text")
def write_text_corpus(config, workdir: Path) -> str:
  """Writes <workdir>/text.jsonl ({"text": ...} per row) once; returns its path. The MLM
  stages read it as task="files" with label_column="" (every row unlabelled)."""
  out = Path(workdir) / "text.jsonl"
  if out.exists():  # done: a rerun skips it, as train stages skip
    return str(out)
  d = config.distilbert
  texts = read_texts(d.text_file, d.text_column) if d.text_file else task_texts(config.data)
  if not texts:
    raise ValueError(f"no text for the MLM stages in {d.text_file or 'the train split'}; "
                     "point distilbert.text_file at a non-empty file")
  if distributed.is_main():
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
      for t in texts:
        f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    os.replace(tmp, out)  # never leave a half-written corpus that a rerun would take as done
    log.info("wrote %d unlabelled texts to %s", len(texts), out)
  distributed.sync(f"text corpus {out}")
  return str(out)
