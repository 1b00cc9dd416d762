"""Distilled BiLSTM (Tang et al. 2019): the student against an independent NumPy LSTM and
torch.nn.LSTM, padding invariance (the backward direction starts at each row's last real
token), the checkpoint round trip, the paper's augmentation operations, unlabelled rows
without a hard loss, and configs/bilstm.py:tiny end to end (rerun skips what is done)."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdistill.data import augment_tang
from jaxdistill.data.task_data import RawSplit, RawTask
from jaxdistill.methods import bilstm as method
from jaxdistill.models import Collect, registry
from jaxdistill.models.bilstm import BiLSTM, BiLSTMConfig, load, params_of, save, with_params
from jaxdistill.models.hub import load_pretrained, save_pretrained

CFG = BiLSTMConfig(vocab_size=50, embed_dim=6, hidden_size=5, dense_size=7, num_labels=3,
                   dropout=0.0, label_names=("a", "b", "c"))
LENGTHS = (7, 4, 1, 6)
S = 7


def model_and_params(cfg=CFG, seed=0):
  """A model whose every weight is perturbed away from its init (biases non-zero too)."""
  model = BiLSTM(cfg, rngs=nnx.Rngs(seed))
  rng = np.random.default_rng(seed + 1)
  params = jax.tree.map(lambda x: np.asarray(x) + 0.3 * rng.standard_normal(x.shape).astype(np.float32),
                        params_of(model))
  return with_params(model, params), params


def batch(lengths=LENGTHS, seq=S, pad_id=0, seed=0):
  rng = np.random.default_rng(seed)
  mask = (np.arange(seq)[None] < np.asarray(lengths)[:, None]).astype(np.int32)
  ids = np.where(mask == 1, rng.integers(1, CFG.vocab_size, (len(lengths), seq)), pad_id)
  return ids.astype(np.int32), mask


# ---- An independent reference: one row at a time, real tokens only -------------------------
def sigmoid(x):
  return 1.0 / (1.0 + np.exp(-x))


def np_lstm(xs, w_x, w_h, b):
  """xs [T, E] -> the states h_1..h_T [T, H]; gates i, f, g, o as torch.nn.LSTM."""
  h_size = w_h.shape[0]
  h, c, out = np.zeros(h_size), np.zeros(h_size), []
  for x in xs:
    z = x @ w_x + h @ w_h + b
    i, f, g, o = (z[k * h_size:(k + 1) * h_size] for k in range(4))
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    out.append(h)
  return np.asarray(out).reshape(len(xs), h_size)


def np_forward(p, ids, mask):
  """(logits [B, C], per-token states [B, S, 2H]) of Tang et al.'s classifier."""
  p = jax.tree.map(lambda x: np.asarray(x, np.float64), p)
  lstm, logits = p["lstm"], []
  states = np.zeros(ids.shape + (2 * lstm["bias"].shape[1] // 4,))
  for r in range(ids.shape[0]):
    pos = np.flatnonzero(mask[r])
    xs = p["embeddings"]["word"]["embedding"][ids[r, pos]]
    fwd = np_lstm(xs, lstm["input_kernel"][0], lstm["recurrent_kernel"][0], lstm["bias"][0])
    bwd = np_lstm(xs[::-1], lstm["input_kernel"][1], lstm["recurrent_kernel"][1], lstm["bias"][1])[::-1]
    states[r, pos] = np.concatenate([fwd, bwd], axis=-1)
    final = np.concatenate([fwd[-1], bwd[0]])  # forward ends at the last token, backward at the first
    hidden = np.maximum(final @ p["dense"]["kernel"] + p["dense"]["bias"], 0.0)
    logits.append(hidden @ p["classifier"]["kernel"] + p["classifier"]["bias"])
  return np.asarray(logits), states


def test_forward_matches_numpy_lstm():
  model, params = model_and_params()
  ids, mask = batch()
  out = model(jnp.asarray(ids), jnp.asarray(mask), jnp.zeros_like(ids))
  want_logits, want_states = np_forward(params, ids, mask)
  np.testing.assert_allclose(np.asarray(out.logits), want_logits, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(np.asarray(out.last_hidden), want_states, rtol=1e-4, atol=1e-5)
  assert out.logits.dtype == jnp.float32 and out.logits.shape == (len(LENGTHS), 3)


def test_forward_matches_torch_bidirectional_lstm():
  torch = pytest.importorskip("torch")
  model, params = model_and_params(seed=3)
  ids, mask = batch(seed=3)
  lstm = torch.nn.LSTM(CFG.embed_dim, CFG.hidden_size, batch_first=True, bidirectional=True)
  p = params["lstm"]
  with torch.no_grad():
    for d, suffix in ((0, ""), (1, "_reverse")):
      getattr(lstm, f"weight_ih_l0{suffix}").copy_(torch.tensor(np.asarray(p["input_kernel"][d]).T))
      getattr(lstm, f"weight_hh_l0{suffix}").copy_(torch.tensor(np.asarray(p["recurrent_kernel"][d]).T))
      getattr(lstm, f"bias_ih_l0{suffix}").copy_(torch.tensor(np.asarray(p["bias"][d])))
      getattr(lstm, f"bias_hh_l0{suffix}").zero_()
  x = torch.tensor(np.asarray(params["embeddings"]["word"]["embedding"])[ids])
  packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=True,
                                                   enforce_sorted=False)
  _, (h_n, _) = lstm(packed)
  final = torch.cat([h_n[0], h_n[1]], dim=-1).detach().numpy()
  out = model(jnp.asarray(ids), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(out.pooled), final, rtol=1e-4, atol=1e-5)


def test_padding_never_enters_the_recurrence():
  model, _ = model_and_params()
  ids, mask = batch()
  ref = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)).logits)
  # Appending padding columns (so the backward direction has more steps before the last
  # real token) leaves every logit unchanged.
  ids_long, mask_long = batch(seq=S + 9)
  ids_long[:, :S] = ids
  long = np.asarray(model(jnp.asarray(ids_long), jnp.asarray(mask_long)).logits)
  np.testing.assert_allclose(long, ref, rtol=1e-6, atol=1e-6)
  # Whatever ids sit in the padded positions are never read either.
  garbage = np.where(mask_long == 1, ids_long, np.random.default_rng(9).integers(1, 50, ids_long.shape))
  np.testing.assert_allclose(np.asarray(model(jnp.asarray(garbage), jnp.asarray(mask_long)).logits),
                             ref, rtol=1e-6, atol=1e-6)


def test_backward_direction_starts_at_the_last_real_token():
  """The backward state at a row's last real token is one LSTM step from a zero state."""
  model, params = model_and_params()
  ids, mask = batch(seq=S + 5)
  states = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)).last_hidden)
  p, h = params["lstm"], CFG.hidden_size
  for r, n in enumerate(LENGTHS):
    x = np.asarray(params["embeddings"]["word"]["embedding"])[ids[r, n - 1]][None]
    one_step = np_lstm(x, p["input_kernel"][1], p["recurrent_kernel"][1], p["bias"][1])[0]
    np.testing.assert_allclose(states[r, n - 1, h:], one_step, rtol=1e-4, atol=1e-5)
    assert not states[r, n:].any()  # padded positions output zeros


def test_dropout_is_keyed_and_collect_refuses_transformer_internals():
  model, _ = model_and_params(CFG.replace(dropout=0.5))
  ids, mask = (jnp.asarray(a) for a in batch())
  a = model(ids, mask, dropout_key=jax.random.key(0)).logits
  b = model(ids, mask, dropout_key=jax.random.key(1)).logits
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(a, model(ids, mask, dropout_key=jax.random.key(0)).logits)
  with pytest.raises(ValueError, match="no transformer layers"):
    model(ids, mask, collect=Collect(hidden_states=True))


def test_save_load_round_trip(tmp_path):
  model, params = model_and_params()
  save(CFG, params, tmp_path / "m")
  hf = json.loads((tmp_path / "m" / "config.json").read_text())
  assert hf[registry.ARCH_KEY] == "bilstm"
  loaded, fresh = load_pretrained(str(tmp_path / "m"))  # dispatches on jaxdistill_arch
  assert fresh == [] and loaded.config == CFG
  jax.tree.map(np.testing.assert_array_equal, params_of(loaded), params)
  ids, mask = (jnp.asarray(a) for a in batch())
  np.testing.assert_array_equal(loaded(ids, mask).logits, model(ids, mask).logits)
  # hub.save_pretrained dispatches too, and a changed head starts fresh.
  save_pretrained(CFG, params, tmp_path / "m2")
  two, fresh = load(tmp_path / "m2", hf, seed=1, head=dict(num_labels=2, label_names=("x", "y")))
  assert fresh == ["classifier.bias", "classifier.kernel"] and two.config.num_labels == 2
  np.testing.assert_array_equal(params_of(two)["lstm"]["input_kernel"], params["lstm"]["input_kernel"])


def test_projected_embeddings_keep_the_principal_subspace():
  rng = np.random.default_rng(0)
  table = rng.standard_normal((400, 3)) @ rng.standard_normal((3, 12)) + 0.01 * rng.standard_normal((400, 12))
  out = method.projected_embeddings(table, 3)
  assert out.shape == (400, 3) and out.std() == pytest.approx(1.0, rel=1e-5)
  # Three components carry a rank-3 table: a linear map recovers the centred table.
  centred = table - table.mean(0)
  coef, *_ = np.linalg.lstsq(out, centred, rcond=None)
  assert np.abs(out @ coef - centred).max() < 0.1
  with pytest.raises(ValueError, match="wider than the source"):
    method.projected_embeddings(table, 13)


# ---- Augmentation --------------------------------------------------------------------------
WORDS = "the film is a charming , funny and moving portrait of a family".split()


def test_masking_replaces_only_whole_words_with_mask():
  rng = np.random.default_rng(0)
  n_masked = 0
  for _ in range(50):
    out = augment_tang.augment_words(WORDS, rng, p_mask=0.4, p_ng=0.0)
    assert len(out) == len(WORDS)
    assert all(o in (w, augment_tang.MASK) for o, w in zip(out, WORDS))
    n_masked += sum(o == augment_tang.MASK for o in out)
  assert 0.3 < n_masked / (50 * len(WORDS)) < 0.5  # about p_mask of the words


def test_ngram_sampling_gives_contiguous_subsequences_of_1_to_5_words():
  rng = np.random.default_rng(1)
  lengths = set()
  for _ in range(200):
    out = augment_tang.augment_words(WORDS, rng, p_mask=0.0, p_ng=1.0)
    lengths.add(len(out))
    assert any(WORDS[i:i + len(out)] == out for i in range(len(WORDS)))
  assert lengths == {1, 2, 3, 4, 5}
  short = augment_tang.augment_words(["too", "short"], rng, p_mask=0.0, p_ng=1.0)
  assert short in (["too"], ["short"], ["too", "short"])


def test_zero_probabilities_give_the_originals():
  rng = np.random.default_rng(2)
  assert augment_tang.augment_words(WORDS, rng, p_mask=0.0, p_ng=0.0) == WORDS
  rows = list(augment_tang.augment_examples([(" ".join(WORDS),), ("a b",)], p_mask=0.0, p_ng=0.0,
                                            n_iter=5, seed=0))
  assert rows == [(0, False, (" ".join(WORDS),)), (1, False, ("a b",))]  # every copy a duplicate
  with pytest.raises(ValueError, match="not a probability"):
    augment_tang.check_settings(1.5, 0.0, 1)


def raw_task(texts, labels):
  split = RawSplit("train", list(texts), None, np.asarray(labels, np.int32))
  return RawTask("rotten_tomatoes", ["rotten", "fresh"], False, {"train": split}, ("text",))


def test_augmented_file_is_deterministic_and_keeps_original_labels(tmp_path):
  texts = [" ".join(WORDS), "a dull , lifeless film", "one of the best of the year"]
  raw = raw_task(texts, [1, 0, 1])
  kw = dict(p_mask=0.1, p_ng=0.25, n_iter=6, show_progress=False)
  a = augment_tang.write_augmented(raw, tmp_path / "a.jsonl", seed=0, **kw)
  augment_tang.write_augmented(raw, tmp_path / "b.jsonl", seed=0, **kw)
  augment_tang.write_augmented(raw, tmp_path / "c.jsonl", seed=1, **kw)
  rows = augment_tang.read_rows(tmp_path / "a.jsonl")
  assert rows == augment_tang.read_rows(tmp_path / "b.jsonl")
  assert rows != augment_tang.read_rows(tmp_path / "c.jsonl")
  assert not list(tmp_path.glob("*.tmp"))
  originals = [r for r in rows if r["label"] is not None]
  assert originals == [{"text": t, "label": n} for t, n in zip(texts, ["fresh", "rotten", "fresh"])]
  synthetic = [r["text"] for r in rows if r["label"] is None]
  assert a == {"originals": 3, "synthetic": len(synthetic)} and synthetic
  assert len(set(synthetic)) == len(synthetic) and not set(synthetic) & set(texts)
  # Each synthetic row's source example's rows come right after it, in the file's order.
  assert rows[0]["label"] == "fresh" and rows[1]["label"] is None


def test_mask_token_is_the_teacher_tokenizers_mask(minilm_dir):
  from transformers import AutoTokenizer
  tok = AutoTokenizer.from_pretrained(str(minilm_dir))
  ids = tok(f"a {augment_tang.MASK} film")["input_ids"]
  assert tok.mask_token_id in ids


def test_unlabelled_rows_carry_no_hard_loss():
  """hard_ce averages over the labelled rows alone; logit_mse over every row."""
  from jaxdistill.methods import TERMS, Inputs
  from jaxdistill.models import BertOutput
  rng = np.random.default_rng(0)
  logits = rng.standard_normal((4, 2)).astype(np.float32)
  teacher = rng.standard_normal((4, 2)).astype(np.float32)
  labels = np.asarray([-1, 1, -1, 0], np.int32)
  b = {"labels": jnp.asarray(labels), "example_weight": jnp.ones(4)}

  def terms_at(z):
    x = Inputs(BertOutput(last_hidden=jnp.zeros(()), logits=jnp.asarray(z)),
               BertOutput(last_hidden=jnp.zeros(()), logits=jnp.asarray(teacher)), b, {},
               CFG.replace(num_labels=2, label_names=()), None)
    return float(TERMS["hard_ce"]()(x)), float(TERMS["logit_mse"]()(x))

  hard, mse = terms_at(logits)
  log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  assert hard == pytest.approx(-(log_p[1, 1] + log_p[3, 0]) / 2, rel=1e-5)
  assert mse == pytest.approx(np.mean((logits - teacher) ** 2), rel=1e-5)
  moved = logits.copy()
  moved[[0, 2]] += 5.0  # the unlabelled rows' logits change
  hard2, mse2 = terms_at(moved)
  assert hard2 == pytest.approx(hard, rel=1e-6) and mse2 != pytest.approx(mse)


# ---- End to end ----------------------------------------------------------------------------
@pytest.mark.heavy
def test_tiny_config_end_to_end_and_rerun_skips_done_stages(tmp_path):
  from jaxdistill.config_lib import load_config
  from jaxdistill.results import _latency
  from jaxdistill.testing import tiny_checkpoint
  from jaxdistill.pipeline import run as train_and_evaluate
  teacher = tiny_checkpoint(tmp_path / "teacher", num_layers=1, seed=1, label_names=("rotten", "fresh"))
  source = tiny_checkpoint(tmp_path / "source", num_layers=1, seed=2)  # tokenizer + 32-d embeddings
  c = load_config("configs/bilstm.py:tiny")
  c.teacher.source, c.teacher.finetune = str(teacher), False
  c.student.source = str(source)
  c.cache_dir = str(tmp_path / "cache")
  work = tmp_path / "run"
  out = train_and_evaluate(c, work)

  aug = work / "augment" / augment_tang.FILE_NAME
  rows = augment_tang.read_rows(aug)
  meta = json.loads(augment_tang.meta_path(aug).read_text())
  assert meta["originals"] == 48 and meta["rows"] == len(rows) > 48  # max_examples=48 reviews
  assert {r["label"] for r in rows} == {"rotten", "fresh", None}
  lines = [json.loads(l) for l in (work / "metrics.jsonl").read_text().splitlines()]
  steps = [l["step"] for l in lines if "train/loss" in l]
  assert steps and all(np.isfinite(l["train/loss/logit_mse"]) for l in lines if "train/loss" in l)
  assert {"train/loss/hard_ce", "train/loss/logit_mse"} <= set().union(*lines)
  assert 0.0 <= out["student"]["test"]["accuracy"] <= 1.0
  hf = json.loads((work / "export" / "config.json").read_text())
  assert hf[registry.ARCH_KEY] == "bilstm" and hf["embed_dim"] == 16 and hf["label_names"] == ["rotten", "fresh"]
  assert (work / "export" / "tokenizer.json").is_file()
  student, _ = load_pretrained(str(work / "export"))
  assert isinstance(student, BiLSTM)
  report = json.loads((work / "report.json").read_text())
  assert report["student_params"] == out["student_params"] and report["speedup"] > 0
  # The results table's latency path loads the exported BiLSTM the same way.
  assert _latency(teacher, work / "export", (8, 32), 2)["speedup"] > 0

  mtime = aug.stat().st_mtime_ns
  train_and_evaluate(c, work)  # everything done: the augmentation is reused, no step retrains
  assert aug.stat().st_mtime_ns == mtime
  again = [json.loads(l) for l in (work / "metrics.jsonl").read_text().splitlines()]
  assert [l["step"] for l in again if "train/loss" in l] == steps
  c.bilstm.augment_p_mask = 0.3  # another setting must not silently reuse the file
  with pytest.raises(ValueError, match="made with other settings"):
    train_and_evaluate(c, work)
