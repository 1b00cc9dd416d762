"""DistilBERT's general distillation: BERT's dynamic masking against its definition (15% of
the real non-special tokens of a row; 80% [MASK], 10% random, 10% unchanged) over many draws,
HF's count^-s selection (mlm_smoothing) against NumPy and the pre-smoothing masks bit for bit,
the three loss terms against NumPy, both models reading the same masked ids inside the train
step, unlabelled text as data, the teacher checks, and the tiny config end to end."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdistill import data as data_lib
from jaxdistill.config_lib import base_config, load_config
from jaxdistill.methods import distilbert
from jaxdistill.models import BertConfig, BertModel, BertOutput, tiny_config
from jaxdistill.models.hub import load_pretrained, params_of, read_hf_weights, with_params
from jaxdistill.testing import tiny_checkpoint
from jaxdistill import methods
from jaxdistill.core import rng as streams
from jaxdistill.core.errors import ConfigError
from jaxdistill.methods import TERMS, Inputs
from jaxdistill.methods.base import RunInfo
from jaxdistill.pipeline import run as train_and_evaluate
from jaxdistill.train import build
from method_helpers import build_step


def term(name, c=None):
  """The term as the composite method builds it from the config."""
  return TERMS[name].from_config(c if c is not None else base_config())


def method_for(c, cfg):
  m = methods.get(c)
  m.setup(RunInfo(cfg, (cfg,), 10))
  return m

V = 30522
PAD, UNK, CLS, SEP, MASK = 0, 100, 101, 102, 103


def real_batch(rng, rows: int, seq: int, vocab: int = V):
  """[CLS] words [SEP] [PAD]...: random lengths, ordinary word ids (some [UNK]s inside)."""
  lengths = rng.integers(2, seq + 1, rows)  # 2 = [CLS][SEP] only: nothing to mask
  ids = rng.integers(MASK + 1, vocab, (rows, seq))
  ids[rng.random((rows, seq)) < 0.03] = UNK
  pos = np.arange(seq)[None]
  ids[:, 0] = CLS
  ids = np.where(pos == lengths[:, None] - 1, SEP, ids)
  ids = np.where(pos >= lengths[:, None], PAD, ids)
  mask = (pos < lengths[:, None]).astype(np.int32)
  return ids.astype(np.int32), mask


_mask = jax.jit(lambda key, ids, mask: distilbert.mask_tokens(key, ids, mask, base_config().distilbert, V))


def draws(n_keys=8, rows=512, seq=40, seed=0):
  rng = np.random.default_rng(seed)
  ids, mask = real_batch(rng, rows, seq)
  out = [tuple(np.asarray(a) for a in _mask(jax.random.key(k), ids, mask)) for k in range(n_keys)]
  return ids, mask, out


def within(count, n, p, sigmas=5.0):
  """|count - n p| within `sigmas` binomial standard deviations."""
  return abs(count - n * p) <= sigmas * np.sqrt(n * p * (1 - p))


def test_each_row_predicts_15_percent_of_its_real_non_special_tokens():
  ids, mask, out = draws()
  eligible = (mask == 1) & ~np.isin(ids, [PAD, UNK, CLS, SEP, MASK])
  n = eligible.sum(1)
  expected = np.where(n > 0, np.maximum(1, np.floor(0.15 * n + 0.5)), 0)  # BERT: max(1, round)
  for masked, labels in out:
    selected = labels != -1
    np.testing.assert_array_equal(selected.sum(1), expected)
    assert not (selected & ~eligible).any(), "a special or padding position was selected"
    np.testing.assert_array_equal(labels[selected], ids[selected])  # labels: the original ids
    # Nothing outside the selection changes: specials, padding, unselected words.
    np.testing.assert_array_equal(masked[~selected], ids[~selected])


def test_replacements_are_80_10_10_and_random_ids_uniform():
  ids, _, out = draws()
  n = n_mask = n_same = 0
  randoms = []
  for masked, labels in out:
    sel = labels != -1
    orig, new = ids[sel], masked[sel]
    n += sel.sum()
    n_mask += (new == MASK).sum()
    n_same += (new == orig).sum()
    randoms.append(new[(new != MASK) & (new != orig)])
  randoms = np.concatenate(randoms)
  # A random id is [MASK] or the original itself with probability 1/V each.
  assert within(n_mask, n, 0.8 + 0.1 / V), n_mask / n
  assert within(n_same, n, 0.1 + 0.1 / V), n_same / n
  assert within(len(randoms), n, 0.1 * (1 - 2 / V)), len(randoms) / n
  assert randoms.min() >= 0 and randoms.max() < V
  assert within((randoms < V // 2).sum(), len(randoms), (V // 2) / V)  # uniform over the vocab


def test_selection_is_uniform_over_positions():
  rows, seq = 4000, 22  # every row: [CLS] 20 words [SEP] -> 3 of 20 selected
  rng = np.random.default_rng(1)
  ids = rng.integers(1000, V, (rows, seq)).astype(np.int32)
  ids[:, 0], ids[:, -1] = CLS, SEP
  _, labels = _mask(jax.random.key(5), ids, np.ones_like(ids))
  per_position = (np.asarray(labels)[:, 1:-1] != -1).sum(0)
  assert all(within(c, rows, 3 / 20) for c in per_position), per_position


def test_masking_is_a_function_of_seed_and_step():
  """prepare_batch gets the step's key, fold_in(key(seed), step), as the train step derives it."""
  c = base_config()
  c.losses.hard_ce, c.losses.mlm, c.losses.distil_soft_ce = 0.0, 1.0, 1.0
  ids, mask = real_batch(np.random.default_rng(2), 64, 32)
  batch = {"input_ids": jnp.asarray(ids), "attention_mask": jnp.asarray(mask)}
  cfg = BertConfig()

  method = method_for(c, cfg)
  prepare = jax.jit(lambda key: method.prepare_batch(batch, key))

  def at(seed, step):
    out = prepare(jax.random.fold_in(jax.random.key(seed), step))
    return np.asarray(out["input_ids"]), np.asarray(out["mlm_labels"])

  a = at(0, 7)
  for x, y in zip(a, at(0, 7)):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[1], at(0, 8)[1]) and not np.array_equal(a[1], at(1, 7)[1])
  # Both terms carry the hook; the batch is masked once, from their shared named stream.
  key = streams.named(streams.step_key(0, 7), "prepare", "mlm_mask")
  once = _mask(key, ids, mask)
  for x, y in zip(a, once):
    np.testing.assert_array_equal(x, np.asarray(y))


def test_wrong_mask_id_is_a_clear_error():
  c = base_config()
  c.distilbert.mask_token_id = 104
  with pytest.raises(ValueError, match=r"\[MASK\]=103.*--config.distilbert.mask_token_id=103"):
    distilbert.check_token_ids(distilbert.Masking.from_config(c), V, c.student.source)



# ---- The loss terms against NumPy --------------------------------------------------------------
def log_softmax(z):
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def random_model(cfg, seed):
  """A BertModel with NumPy-drawn weights (no random-init programs to compile)."""
  rng = np.random.default_rng(seed)
  abstract = nnx.eval_shape(lambda: BertModel(cfg, rngs=nnx.Rngs(0)))

  def fill(path, x):
    base = 1.0 if path[-1].key == "scale" else 0.0
    return jnp.asarray(base + 0.5 * rng.standard_normal(x.shape), x.dtype)
  return with_params(abstract, jax.tree_util.tree_map_with_path(fill, params_of(abstract)))


def term_inputs(rng, B=3, S=20):
  """Terms' inputs with real MLM heads (random, vocab 128; the teacher is wider): at most
  max_selected(20) = 3 selected positions a row, as the masking makes them."""
  k = distilbert.max_selected(S, 0.15)
  labels = np.full((B, S), -1)
  for b in range(B):
    where = rng.choice(np.arange(1, S - 1), size=rng.integers(1, k + 1), replace=False)
    labels[b, where] = rng.integers(0, 128, len(where))
  mask = np.ones((B, S), np.int32)
  mask[1, 15:] = 0
  labels[1, 15:] = -1
  labels[1, 3] = 7  # row 1 keeps one selected position
  weight = np.array([1.0, 1.0, 0.0], np.float32)  # row 2 is a batch-padding row
  s_cfg = tiny_config(mlm_head=True)
  t_cfg = tiny_config(mlm_head=True, hidden_size=48, num_heads=4)
  s_model, t_model = random_model(s_cfg, 1), random_model(t_cfg, 2)
  s = BertOutput(last_hidden=jnp.asarray(rng.normal(size=(B, S, 32)), jnp.float32))
  t = BertOutput(last_hidden=jnp.asarray(rng.normal(size=(B, S, 48)), jnp.float32))
  batch = {"mlm_labels": jnp.asarray(labels), "attention_mask": jnp.asarray(mask),
           "example_weight": jnp.asarray(weight)}
  x = Inputs(s, t, batch, {}, s_cfg, t_cfg, params_of(s_model), params_of(t_model))
  # The reference reads the heads' logits at every position.
  full = (np.asarray(s_model.mlm_logits(s.last_hidden)), np.asarray(t_model.mlm_logits(t.last_hidden)))
  return x, labels, mask, weight, full


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_distil_soft_ce_is_t2_kl_at_the_masked_positions_only(T):
  x, labels, _, weight, (s, t) = term_inputs(np.random.default_rng(3))
  c = base_config()
  c.distilbert.temperature = T
  keep = (labels != -1) & (weight[:, None] > 0)
  lp, lq = log_softmax(t[keep] / T), log_softmax(s[keep] / T)
  want = T * T * (np.exp(lp) * (lp - lq)).sum(-1).mean()
  got = term("distil_soft_ce", c)(x)
  np.testing.assert_allclose(float(got), want, rtol=1e-5)
  # Hidden states at unselected positions do not matter.
  noise = jnp.asarray(np.where(keep[..., None], 0.0, 5.0), jnp.float32)
  x2 = x._replace(student=BertOutput(last_hidden=x.student.last_hidden + noise))
  np.testing.assert_allclose(float(term("distil_soft_ce", c)(x2)), want, rtol=1e-5)


def test_mlm_is_cross_entropy_at_the_masked_positions():
  x, labels, _, weight, (s, _) = term_inputs(np.random.default_rng(4))
  keep = (labels != -1) & (weight[:, None] > 0)
  lq = log_softmax(s[keep])
  want = -lq[np.arange(keep.sum()), labels[keep]].mean()
  np.testing.assert_allclose(float(term("mlm")(x)), want, rtol=1e-5)


def test_cosine_is_one_minus_cos_of_last_hidden_at_real_tokens():
  x, _, mask, weight, _ = term_inputs(np.random.default_rng(5))
  x = x._replace(teacher=BertOutput(last_hidden=x.student.last_hidden[::-1] + 0.3))
  s, t = np.asarray(x.student.last_hidden), np.asarray(x.teacher.last_hidden)
  keep = (mask == 1) & (weight[:, None] > 0)
  cos = (s * t).sum(-1) / (np.linalg.norm(s, axis=-1) * np.linalg.norm(t, axis=-1))
  np.testing.assert_allclose(float(term("cosine")(x)), (1 - cos[keep]).mean(), rtol=1e-5)


# ---- Inside the train step -----------------------------------------------------------------------
def test_student_and_teacher_read_the_same_masked_ids():
  """Teacher = student (same weights, no dropout): cosine and the soft loss are exactly 0 only
  if both forwards read the same ids, and the step's MLM loss is that of the masked batch."""
  c = base_config()
  c.losses.hard_ce, c.losses.mlm, c.losses.distil_soft_ce, c.losses.cosine = 0.0, 1.0, 1.0, 1.0
  # Vocab 128; large random weights, so the MLM logits depend clearly on the input ids.
  cfg = tiny_config(mlm_head=True, hidden_dropout=0.0, attention_dropout=0.0)
  model = random_model(cfg, 0)
  params = params_of(model)
  ids, mask = real_batch(np.random.default_rng(6), 8, 16, vocab=cfg.vocab_size)
  batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids),
           "labels": np.zeros(8, np.int32), "example_weight": np.ones(8, np.float32)}
  method, step, init, _ = build_step(c, cfg, cfg, total_steps=4)
  _, metrics = step(init(params, {}), params, batch)
  assert float(metrics["loss/cosine"]) < 1e-5 and float(metrics["loss/distil_soft_ce"]) < 1e-5
  # The masks the step drew: its key for step 0, as in step.train_step.
  masked = method.prepare_batch({k: jnp.asarray(v) for k, v in batch.items()},
                                streams.step_key(c.seed, 0))
  assert (np.asarray(masked["input_ids"]) != ids).any()

  def mlm_loss(input_ids):
    out = model(jnp.asarray(input_ids), jnp.asarray(mask), collect=distilbert.MLM)
    return float(term("mlm", c)(Inputs(out, None, masked, {}, cfg, cfg, params)))

  np.testing.assert_allclose(float(metrics["loss/mlm"]), mlm_loss(masked["input_ids"]), rtol=1e-5)
  assert abs(mlm_loss(ids) - float(metrics["loss/mlm"])) > 0.1  # unmasked ids would differ


# ---- Unlabelled text ------------------------------------------------------------------------------
def test_a_text_only_file_loads_unlabelled(tmp_path):
  path = tmp_path / "corpus.csv"
  path.write_text("text\nfirst review\nsecond one\n")
  cfg = data_lib.default_data_config()
  cfg.task, cfg.train_file, cfg.label_column = "files", str(path), ""
  raw = data_lib.load_raw_task(cfg)
  train = raw.splits["train"]
  assert list(raw.splits) == ["train"] and raw.label_names is None
  assert train.texts == ["first review", "second one"] and not train.has_labels
  np.testing.assert_array_equal(train.labels, [-1, -1])
  cfg.label_column = "label"  # a named column the file lacks stays an error
  with pytest.raises(data_lib.DataError, match="'' for text without labels"):
    data_lib.load_raw_task(cfg)


def test_corpus_stage_writes_texts_without_labels(tmp_path):
  c = base_config()
  txt = tmp_path / "any.txt"
  txt.write_text("one line\n\n  another line  \n")
  c.distilbert.text_file = str(txt)
  out = distilbert.write_text_corpus(c, tmp_path / "a")
  assert [json.loads(l) for l in open(out)] == [{"text": "one line"}, {"text": "another line"}]
  table = tmp_path / "t.csv"
  table.write_text("sentence,label\nthe film,pos\nthe plot,neg\n")
  c.distilbert.text_file = ""
  c.data.task, c.data.train_file, c.data.text_column = "files", str(table), "sentence"
  out = distilbert.write_text_corpus(c, tmp_path / "b")
  assert [json.loads(l) for l in open(out)] == [{"text": "the film"}, {"text": "the plot"}]


def test_teacher_checks_follow_what_the_losses_read(minilm_dir):
  """MiniLM has neither classifier nor MLM head: fine for the cosine term alone; an error
  for a loss on its logits or on its MLM logits."""
  c = base_config()
  c.report.compression = False
  c.losses.hard_ce, c.losses.cosine = 0.0, 1.0
  task = data_lib.TaskData("files", None, False, {}, ("text",))
  assert build.build_teacher(str(minilm_dir), c, task, methods.get(c)).cfg.num_layers == 6
  c.losses.distil_soft_ce = 1.0
  with pytest.raises(ValueError, match="no MLM head"):
    build.build_teacher(str(minilm_dir), c, task, methods.get(c))
  c.losses.distil_soft_ce, c.losses.kd = 0.0, 1.0
  labelled = data_lib.TaskData("rotten_tomatoes", ["rotten", "fresh"], False, {}, ("text",))
  with pytest.raises(ValueError, match="no trained classifier"):
    build.build_teacher(str(minilm_dir), c, labelled, methods.get(c))


def test_token_ids_are_the_minilm_tokenizers(minilm_dir):
  from transformers import AutoTokenizer
  tok = AutoTokenizer.from_pretrained(str(minilm_dir))
  d = base_config().distilbert
  assert tok.mask_token_id == d.mask_token_id == MASK
  assert set(tok.all_special_ids) == set(d.special_token_ids) == {PAD, UNK, CLS, SEP, MASK}


# ---- The config end to end ------------------------------------------------------------------------
@pytest.mark.heavy
def test_tiny_config_end_to_end_and_rerun_skips_done_stages(tmp_path):
  src = str(tiny_checkpoint(tmp_path / "minilm_like", num_layers=6, seed=3))
  c = load_config("configs/distilbert.py:tiny")
  c.student.source = c.teacher.source = src
  c.cache_dir = str(tmp_path / "cache")
  c.report.compression = False
  work = tmp_path / "run"
  summary = train_and_evaluate(c, work)
  assert summary["task"] == "rotten_tomatoes" and "test" in summary["student"]
  src_w = read_hf_weights(src)
  head = read_hf_weights(work / "teacher_mlm" / "export")
  # Stage 2 fitted the MLM head alone: the encoder is the source's, bit for bit.
  for k, v in src_w.items():
    if k.startswith("bert.encoder") or k.startswith("bert.embeddings"):
      np.testing.assert_array_equal(head[k], v, err_msg=k)
  assert np.abs(head["cls.predictions.bias"]).max() > 0  # fresh zeros, then trained
  student, _ = load_pretrained(str(work / "general" / "export"), mlm_head=True)
  assert student.config.num_layers == 3
  final, _ = load_pretrained(str(work / "export"))
  assert final.config.num_layers == 3 and final.config.label_names == ("rotten", "fresh")
  done = {p: p.stat().st_mtime_ns for p in [work / "text" / "text.jsonl",
                                             work / "teacher_mlm" / "export" / "DONE",
                                             work / "general" / "export" / "DONE"]}
  train_and_evaluate(c, work)
  assert {p: p.stat().st_mtime_ns for p in done} == done
