"""DistilBERT's mlm_smoothing (HF's count^-s token selection) against NumPy; split from
test_distilbert.py, whose helpers it shares."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill import data as data_lib
from jaxdistill.config_lib import base_config, load_config
from jaxdistill.methods import distilbert
from jaxdistill.core import rng as streams
from jaxdistill.models import BertConfig, tiny_config  # noqa: F401
from jaxdistill.testing import tiny_checkpoint  # noqa: F401
from jaxdistill.core.errors import ConfigError
from jaxdistill.models.hub import load_pretrained, params_of  # noqa: F401
from test_distilbert import (CLS, MASK, PAD, SEP, UNK, V, _mask, draws, method_for,  # noqa: F401
                             real_batch, term, within)


# ---- mlm_smoothing: HF's count^-s selection ------------------------------------------------------
def mask_tokens_before(key, input_ids, attention_mask, d, vocab_size):
  """distilbert.mask_tokens and select_positions as they were before mlm_smoothing (ac8ec39)."""
  k_select, k_action, k_random = jax.random.split(key, 3)
  special = jnp.isin(input_ids, jnp.asarray(tuple(d.special_token_ids), input_ids.dtype))
  eligible = (attention_mask != 0) & ~special
  n = jnp.sum(eligible, axis=1)
  k = jnp.where(n > 0, jnp.maximum(1, jnp.floor(d.mask_prob * n + 0.5).astype(jnp.int32)), 0)
  scores = jnp.where(eligible, jax.random.uniform(k_select, eligible.shape), 2.0)
  selected = eligible & (jnp.argsort(jnp.argsort(scores, axis=1), axis=1) < k[:, None])
  u = jax.random.uniform(k_action, input_ids.shape)
  to_mask = selected & (u < d.mask_token_prob)
  to_random = selected & (u >= d.mask_token_prob) & (u < d.mask_token_prob + d.random_token_prob)
  random_ids = jax.random.randint(k_random, input_ids.shape, 0, vocab_size, input_ids.dtype)
  masked = jnp.where(to_mask, jnp.asarray(d.mask_token_id, input_ids.dtype),
                     jnp.where(to_random, random_ids, input_ids))
  return masked, jnp.where(selected, input_ids, -1)


_weighted = jax.jit(lambda key, ids, mask, probs: distilbert.mask_tokens(
    key, ids, mask, base_config().distilbert, V, probs))


def test_smoothing_0_masks_are_bit_identical_to_before():
  ids, mask = real_batch(np.random.default_rng(7), 256, 40)
  before = jax.jit(lambda key: mask_tokens_before(key, ids, mask, base_config().distilbert, V))
  for k in range(4):
    for x, y in zip(_mask(jax.random.key(k), ids, mask), before(jax.random.key(k))):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # Through the method, with the key set explicitly to 0: the same draws from the named stream.
  c = base_config()
  c.losses.hard_ce, c.losses.mlm, c.distilbert.mlm_smoothing = 0.0, 1.0, 0.0
  assert distilbert.Masking.from_config(c).corpus is None  # reads no data
  out = method_for(c, BertConfig()).prepare_batch(
      {"input_ids": jnp.asarray(ids), "attention_mask": jnp.asarray(mask)}, streams.step_key(0, 3))
  want = before(streams.named(streams.step_key(0, 3), "prepare", "mlm_mask"))
  np.testing.assert_array_equal(np.asarray(out["mlm_labels"]), np.asarray(want[1]))
  np.testing.assert_array_equal(np.asarray(out["input_ids"]), np.asarray(want[0]))
  # Equal weights rank exactly as the uniform scores: the weighted path reduces to it.
  flat = np.ones(V, np.float32)
  for x, y in zip(_weighted(jax.random.key(1), ids, mask, flat), _mask(jax.random.key(1), ids, mask)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_token_probs_are_hfs():
  counts = np.array([5, 0, 3, 1, 100, 7, 0, 2])
  got = distilbert.smoothed_token_probs(counts, 0.7, (0, 6))
  w = np.array([0.0, 1.0, 3 ** -0.7, 1.0, 100 ** -0.7, 7 ** -0.7, 0.0, 2 ** -0.7])  # max(c, 1)^-s
  np.testing.assert_allclose(got, w / w.sum(), rtol=1e-6)
  ids = np.array([[1, 4, 4, 9], [2, 0, 0, 0]])
  np.testing.assert_array_equal(distilbert.token_counts(ids, np.array([3, 1]), 10),
                                [0, 1, 1, 0, 2, 0, 0, 0, 0, 0])  # padding and tails not counted


def smoothed_rows(rng, rows, tokens):
  """[CLS] the `tokens` in a random order [SEP], every row."""
  ids = np.stack([rng.permutation(tokens) for _ in range(rows)])
  ids = np.concatenate([np.full((rows, 1), CLS), ids, np.full((rows, 1), SEP)], 1).astype(np.int32)
  return ids, np.ones_like(ids)


@pytest.mark.parametrize("n_tokens", [6, 10])  # 1 selected a row (6 * 0.15), then 2 (10 * 0.15)
def test_selection_frequency_is_count_to_the_minus_s(n_tokens):
  rng = np.random.default_rng(n_tokens)
  tokens = np.arange(2000, 2000 + n_tokens)
  counts = np.zeros(V, np.int64)
  counts[tokens] = rng.integers(1, 5000, n_tokens)
  probs = distilbert.smoothed_token_probs(counts, 0.7, (PAD, UNK, CLS, SEP, MASK))
  rows = 20000
  ids, mask = smoothed_rows(rng, rows, tokens)
  _, labels = _weighted(jax.random.key(n_tokens), ids, mask, probs)
  picked = np.asarray(labels)
  assert ((picked != -1).sum(1) == n_tokens // 5).all()  # BERT's count per row is kept
  freq = np.array([(picked == t).sum() for t in tokens])
  w = np.maximum(counts[tokens], 1.0) ** -0.7
  if n_tokens == 6:  # one draw a row: exactly w / sum(w)
    want = w / w.sum()
  else:  # two draws without replacement, successive (torch.multinomial): enumerate the pairs
    p = w / w.sum()
    want = np.array([sum(p[i] * p[j] / (1 - p[i]) + p[j] * p[i] / (1 - p[j])
                         for j in range(n_tokens) if j != i) for i in range(n_tokens)])
  assert all(within(f, rows, q) for f, q in zip(freq, want)), (freq / rows, want)
  assert not all(within(f, rows, want.mean()) for f in freq)  # not uniform: the test can fail


def test_smoothing_never_selects_special_tokens():
  ids, mask = real_batch(np.random.default_rng(8), 512, 40)
  counts = np.full(V, 1000)
  counts[[PAD, UNK, CLS, SEP, MASK]] = 0  # max(0, 1)^-s = 1: the largest weight, were it allowed
  probs = distilbert.smoothed_token_probs(counts, 0.7, (PAD, UNK, CLS, SEP, MASK))
  eligible = (mask == 1) & ~np.isin(ids, [PAD, UNK, CLS, SEP, MASK])
  n = eligible.sum(1)
  for k in range(4):
    _, labels = _weighted(jax.random.key(k), ids, mask, probs)
    selected = np.asarray(labels) != -1
    assert not (selected & ~eligible).any()
    np.testing.assert_array_equal(selected.sum(1), np.where(n > 0, np.maximum(1, np.floor(0.15 * n + 0.5)), 0))


def test_counts_come_from_the_stage_corpus(tmp_path, minilm_dir):
  from transformers import AutoTokenizer
  texts = ["the film was wonderful", "an unremarkable, tedious film", "the the the plot"]
  (tmp_path / "c.csv").write_text("text\n" + "\n".join(f'"{t}"' for t in texts) + "\n")
  c = base_config()
  c.losses.hard_ce, c.losses.mlm, c.distilbert.mlm_smoothing = 0.0, 1.0, 0.5
  c.data.task, c.data.train_file, c.data.dev_file, c.data.test_file = "files", str(tmp_path / "c.csv"), "", ""
  c.data.label_column, c.data.max_length = "", 8
  c.student.source = str(minilm_dir)
  masking = distilbert.Masking.from_config(c)
  tok = AutoTokenizer.from_pretrained(str(minilm_dir))
  ids = [i for t in texts for i in tok(t, truncation=True, max_length=8)["input_ids"]]
  w = np.maximum(np.bincount(ids, minlength=V), 1.0) ** -0.5
  w[[PAD, UNK, CLS, SEP, MASK]] = 0
  np.testing.assert_allclose(distilbert.corpus_token_probs(masking, V), w / w.sum(), rtol=1e-5)
  # The prepare hook draws with them, from the masking stream.
  batch_ids, mask = real_batch(np.random.default_rng(9), 64, 24)
  out = method_for(c, BertConfig()).prepare_batch(
      {"input_ids": jnp.asarray(batch_ids), "attention_mask": jnp.asarray(mask)}, streams.step_key(0, 1))
  want = _weighted(streams.named(streams.step_key(0, 1), "prepare", "mlm_mask"), batch_ids, mask,
                   (w / w.sum()).astype(np.float32))
  np.testing.assert_array_equal(np.asarray(out["mlm_labels"]), np.asarray(want[1]))
  c.distilbert.mlm_smoothing = -0.5
  with pytest.raises(ConfigError, match=r"mlm_smoothing=-0.5 must be >= 0; .* use 0.7"):
    distilbert.check_probs(distilbert.Masking.from_config(c))
