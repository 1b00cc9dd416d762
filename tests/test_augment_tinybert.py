"""TinyBERT's data augmentation with a tiny random masked-LM (the real MiniLM tokenizer):
every replacement is checked against an independent top-K computation (a plain forward of
the model on the one-word-masked sentence; NumPy cosine neighbours for multi-piece words),
non-eligible words never change, p=0 gives the originals, the file is byte-identical for a
seed and differs for another, labels are carried, and the stage skips a finished file."""

from __future__ import annotations

import json
import re

import jax
import numpy as np
import pytest
from flax import nnx

from jaxdistill.config_lib import base_config
from jaxdistill.data import augment_tinybert as aug
from jaxdistill.data import load_raw_task
from jaxdistill.models import BertConfig, BertModel
from jaxdistill.models.hub import (load_pretrained, load_tokenizer, params_of, resolve_model_dir,
                                   save_pretrained)
from jaxdistill.testing import tiny_checkpoint

TEXTS = ["The unwatchable film is a dreadful mess, not worth 2 hours.",
         "A charming, heartfelt comedy with sparkling performances!",
         "Stevenson's direction feels overwrought and lifeless."]
K = 5


@pytest.fixture(scope="module")
def mlm_dir(tmp_path_factory):
  cfg = BertConfig(vocab_size=30522, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64,
                   max_position_embeddings=128, mlm_head=True, label_names=("rotten", "fresh"))
  model = BertModel(cfg, rngs=nnx.Rngs(0))
  out = tmp_path_factory.mktemp("mlm") / "model"
  return save_pretrained(cfg, params_of(model), out, tokenizer_dir=resolve_model_dir("all-MiniLM-L6-v2"))


@pytest.fixture(scope="module")
def mlm(mlm_dir):
  model, fresh = load_pretrained(str(mlm_dir), mlm_head=True)
  assert not fresh
  return model, load_tokenizer(str(mlm_dir))


def words_of(tok, text):
  backend = tok.backend_tokenizer
  return [w for w, _ in backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(text))]


def whole_words(tok, vocab_size):
  """Valid replacements: words of 2+ letters (uncased vocabulary) that are not stop words."""
  ok = np.zeros(vocab_size, bool)
  for token, i in tok.get_vocab().items():
    ok[i] = bool(re.fullmatch(r"[a-z]{2,}", token)) and token not in aug.STOP_WORDS
  return ok


def mlm_logits_fn(model):
  """[1, S] ids -> [1, S, V] logits of the model's own MLM path (no padding, no gather)."""
  graph, params = nnx.split(model)
  run = jax.jit(lambda p, x: nnx.merge(graph, p)(x, with_mlm=True).mlm_logits)
  return lambda ids: np.asarray(run(params, np.array([ids])), np.float64)[0]


def independent_top_k(model, logits_fn, tok, words, i, k):
  """Scores of every id and the K-th best score among whole words other than the word itself,
  from a plain forward of [CLS] words (word i masked) [SEP] with the model's own MLM path
  (single-piece words), or NumPy cosine to the mean of its pieces' embeddings (the rest)."""
  pieces = [tok.convert_tokens_to_ids(tok.tokenize(w)) for w in words]
  ok = whole_words(tok, model.config.vocab_size)
  table = np.asarray(model.embeddings.word.embedding[...], np.float64)
  if len(pieces[i]) == 1:
    ids, pos = [tok.cls_token_id], None
    for j, p in enumerate(pieces):
      if j == i:
        pos = len(ids)
      ids += [tok.mask_token_id] if j == i else p
    ids.append(tok.sep_token_id)
    scores = logits_fn(ids)[pos]
  else:
    v = table[pieces[i]].mean(0)
    scores = table @ v / (np.linalg.norm(table, axis=1) * np.linalg.norm(v) + 1e-30)
  scores = np.where(ok, scores, -np.inf)
  scores[pieces[i]] = -np.inf  # never the word itself (or its own pieces)
  return scores, np.sort(scores)[-k], pieces[i]


def test_every_eligible_word_is_replaced_by_one_of_its_candidates(mlm):
  model, tok = mlm
  opts = aug.Options(n=3, p=1.0, k=K, seed=0, max_length=32, batch_size=8)
  out = aug.augment_sentences(model, tok, TEXTS, opts)
  kinds, logits_fn = set(), mlm_logits_fn(model)
  for text, rows in zip(TEXTS, out):
    assert rows[0] == text and 2 <= len(rows) <= 4
    orig = words_of(tok, text)
    for row in rows[1:]:
      new = words_of(tok, row)
      assert len(new) == len(orig)
      for i, (a, b) in enumerate(zip(orig, new)):
        eligible = a.isalpha() and a not in aug.STOP_WORDS
        assert (a != b) == eligible, (a, b)  # p = 1: every eligible word, and nothing else
        if eligible:
          scores, kth, pieces = independent_top_k(model, logits_fn, tok, orig, i, K)
          kinds.add(len(pieces) > 1)
          assert scores[tok.convert_tokens_to_ids(b)] >= kth - 1e-4, (a, b)
          assert len(b) > 1 and b not in aug.STOP_WORDS
  assert kinds == {False, True}  # both single-piece (MLM) and multi-piece (embedding) words
  assert "unwatchable" in words_of(tok, TEXTS[0]) and len(tok.tokenize("unwatchable")) > 1


def test_p_zero_returns_the_originals(mlm):
  model, tok = mlm
  out = aug.augment_sentences(model, tok, TEXTS, aug.Options(n=4, p=0.0, k=K, max_length=32))
  assert out == [[t] for t in TEXTS]


def test_same_seed_same_plan_other_seed_differs(mlm):
  model, tok = mlm
  opts = aug.Options(n=4, p=0.5, k=K, seed=3, max_length=32, batch_size=4)
  a = aug.augment_sentences(model, tok, TEXTS, opts)
  assert a == aug.augment_sentences(model, tok, TEXTS, opts)
  assert a != aug.augment_sentences(model, tok, TEXTS, aug.Options(**{**opts.__dict__, "seed": 4}))


def stage_config(mlm_dir, seed=0, n=3):
  c = base_config()
  c.data.max_examples, c.data.max_length = 12, 32
  c.tinybert.augment_model, c.tinybert.augment_n, c.tinybert.augment_k = str(mlm_dir), n, K
  c.tinybert.augment_seed, c.tinybert.augment_batch_size = seed, 16
  return c


def test_stage_file_is_deterministic_carries_labels_and_skips_when_done(mlm_dir, tmp_path):
  paths = [aug.run_augment_stage(stage_config(mlm_dir, seed), tmp_path / name)
           for name, seed in (("a", 0), ("b", 0), ("c", 1))]
  data = [p.read_bytes() for p in paths]
  assert paths[0] == tmp_path / "a" / aug.OUTPUT
  assert data[0] == data[1] and data[0] != data[2]
  train = load_raw_task(stage_config(mlm_dir).data).splits["train"]
  rows = [json.loads(line) for line in data[0].decode().splitlines()]
  # Each original in order, followed by its augmented copies, all with its label.
  starts = [next(i for i, r in enumerate(rows) if r["text"] == t) for t in train.texts]
  assert starts == sorted(starts) and starts[0] == 0
  for k, (start, label) in enumerate(zip(starts, train.labels)):
    end = starts[k + 1] if k + 1 < len(starts) else len(rows)
    assert 1 <= end - start <= 1 + 3
    assert {r["label"] for r in rows[start:end]} == {["rotten", "fresh"][label]}
  assert len(rows) > len(train.texts)
  # Done: a second call leaves the file alone; other settings are an error, not a silent reuse.
  stamp = paths[0].stat().st_mtime_ns
  assert aug.run_augment_stage(stage_config(mlm_dir), tmp_path / "a") == paths[0]
  assert paths[0].stat().st_mtime_ns == stamp
  with pytest.raises(ValueError, match="made with other settings"):
    aug.run_augment_stage(stage_config(mlm_dir, n=5), tmp_path / "a")


def test_a_checkpoint_without_mlm_head_is_refused(tmp_path):
  plain = tiny_checkpoint(tmp_path / "plain")
  with pytest.raises(ValueError, match="has no masked-LM head; fit one first"):
    aug.run_augment_stage(stage_config(plain), tmp_path / "out")
  assert not (tmp_path / "out" / aug.OUTPUT).exists()
