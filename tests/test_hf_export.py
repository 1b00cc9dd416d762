"""Checkpoint import/export on tiny random BERTs.

The references are independent of our conversion code: exports are judged by Hugging Face
transformers' own PyTorch loader (`from_pretrained`, with its missing/unexpected-key report)
and forward pass; imports read checkpoints written by transformers' `save_pretrained` or
plain `torch.save`, with their key names edited by hand for the legacy variants. Every weight
is perturbed off its initial value first, so a swapped or transposed tensor cannot hide.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file, save_file

from jaxdistill.models import BertConfig, BertModel, hub, tiny_config

TOL = 1e-4
LABELS = ("negative", "neutral", "positive")


def tiny_model(seed: int = 0, **overrides) -> BertModel:
  """A tiny BertModel whose every parameter is random, LayerNorm scales 1 + N(0, 0.1) and all
  else N(0, 0.1) (so no bias is 0 and no scale 1). Built abstractly and filled from NumPy:
  BertModel's own initialiser is not under test here, and is slow to compile on CPU."""
  cfg = tiny_config(**overrides)
  abstract = nnx.eval_shape(lambda: BertModel(cfg, rngs=nnx.Rngs(seed)))
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    base = 1.0 if path[-1].key == "scale" else 0.0
    return (base + rng.normal(0, 0.1, leaf.shape)).astype(leaf.dtype)

  return hub.with_params(abstract, jax.tree_util.tree_map_with_path(fill, hub.params_of(abstract)))


def inputs(seed: int = 0):
  """[3, 8] ids / mask / token types with rows of 8, 5 and 2 real tokens."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, 128, (3, 8)).astype(np.int32)
  mask = (np.arange(8)[None] < np.array([[8], [5], [2]])).astype(np.int32)
  types = (rng.integers(0, 2, (3, 8)) * mask).astype(np.int32)
  ids = np.where(mask == 1, ids, 0).astype(np.int32)
  return ids, mask, types


def run_ours(model: BertModel, *, with_mlm: bool = False):
  with jax.default_matmul_precision("highest"):  # no TF32 should this run on a GPU
    return model(*(jnp.asarray(x) for x in inputs()), with_mlm=with_mlm)


def run_torch(model):
  ids, mask, types = (torch.from_numpy(x).long() for x in inputs())
  with torch.no_grad():
    return model.eval()(input_ids=ids, attention_mask=mask, token_type_ids=types)


def from_pretrained_strict(cls, path):
  model, info = cls.from_pretrained(str(path), attn_implementation="eager", output_loading_info=True)
  return model, info


def assert_params_equal(a: dict, b: dict):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    x, y = np.asarray(x), np.asarray(y)
    assert x.dtype == y.dtype and np.array_equal(x, y), jax.tree_util.keystr(path)


def max_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ---- export: PyTorch loads what we write ------------------------------------------------------

def test_classifier_export_loads_in_pytorch_with_no_key_mismatch_and_same_logits(tmp_path):
  model = tiny_model(num_labels=3, label_names=LABELS)
  hub.save_pretrained(model.config, hub.params_of(model), tmp_path)
  ref, info = from_pretrained_strict(transformers.BertForSequenceClassification, tmp_path)
  assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
  assert ref.config.id2label == dict(enumerate(LABELS)) and ref.config.num_labels == 3
  logits = run_torch(ref).logits.numpy()
  assert logits.shape == (3, 3)
  assert max_diff(run_ours(model).logits, logits) < TOL


def test_regression_export_matches_pytorch(tmp_path):
  model = tiny_model(num_labels=1, problem_type="regression")
  hub.save_pretrained(model.config, hub.params_of(model), tmp_path)
  ref, info = from_pretrained_strict(transformers.BertForSequenceClassification, tmp_path)
  assert not info["missing_keys"] and not info["unexpected_keys"]
  assert ref.config.problem_type == "regression" and ref.config.num_labels == 1
  logits = run_torch(ref).logits.numpy()
  assert logits.shape == (3, 1)
  assert max_diff(run_ours(model).logits, logits) < TOL
  again, fresh = hub.load_pretrained(tmp_path)
  assert fresh == [] and again.config.problem_type == "regression"


def test_mlm_export_loads_in_bert_for_masked_lm_with_tied_decoder(tmp_path):
  model = tiny_model(mlm_head=True)
  hub.save_pretrained(model.config, hub.params_of(model), tmp_path)
  written = load_file(str(tmp_path / "model.safetensors"))
  assert {"cls.predictions.bias", "cls.predictions.transform.dense.weight"} <= set(written)
  assert "cls.predictions.decoder.weight" not in written  # tied: it *is* the word embeddings
  ref, info = from_pretrained_strict(transformers.BertForMaskedLM, tmp_path)
  # HF ties the decoder to the word embeddings itself, so nothing is missing; our pooler and
  # classifier are the only extras (BertForMaskedLM has neither).
  assert not info["missing_keys"] and not info["mismatched_keys"]
  assert info["unexpected_keys"] == {"bert.pooler.dense.weight", "bert.pooler.dense.bias",
                                     "classifier.weight", "classifier.bias"}
  assert ref.cls.predictions.decoder.weight is ref.bert.embeddings.word_embeddings.weight
  mlm = run_torch(ref).logits.numpy()
  ours = run_ours(model, with_mlm=True).mlm_logits
  assert ours.shape == mlm.shape == (3, 8, 128)
  assert max_diff(ours, mlm) < TOL


# ---- import: we read what transformers / torch write ------------------------------------------

@pytest.mark.parametrize("act", ["gelu", "relu", "gelu_new"])
def test_import_of_a_transformers_checkpoint_matches_pytorch(tmp_path, make_tiny_hf, act):
  ref = make_tiny_hf(hidden_act=act)
  ref.save_pretrained(tmp_path)
  model, fresh = hub.load_pretrained(tmp_path)
  assert fresh == [] and model.config.num_labels == 3 and model.config.hidden_act == act
  out = run_ours(model)
  ref_out = run_torch(ref)
  assert max_diff(out.logits, ref_out.logits.numpy()) < TOL
  hidden = run_torch(ref.bert).last_hidden_state.numpy()
  assert max_diff(out.last_hidden, hidden) < TOL


def test_import_of_an_mlm_checkpoint_keeps_its_head(tmp_path, make_tiny_hf):
  ref = make_tiny_hf(head="mlm")
  ref.save_pretrained(tmp_path)
  model, fresh = hub.load_pretrained(tmp_path, mlm_head=True)
  # BertForMaskedLM has no pooler and no classifier: those, and only those, start fresh.
  assert sorted(fresh) == ["classifier.bias", "classifier.kernel", "pooler.bias", "pooler.kernel"]
  assert max_diff(run_ours(model, with_mlm=True).mlm_logits, run_torch(ref).logits.numpy()) < TOL


@pytest.mark.parametrize("kind", ["fp32", "bf16_params", "mlm"])
def test_tiny_import_export_import_is_bitwise_exact(tmp_path, kind):
  overrides = {"fp32": dict(num_labels=3, label_names=LABELS),
               "bf16_params": dict(param_dtype="bfloat16"),
               "mlm": dict(mlm_head=True)}[kind]
  model = tiny_model(**overrides)
  hub.save_pretrained(model.config, hub.params_of(model), tmp_path / "a")
  again, fresh = hub.load_pretrained(tmp_path / "a", **overrides)
  assert fresh == [] and again.config == model.config
  assert_params_equal(hub.params_of(model), hub.params_of(again))
  hub.save_pretrained(again.config, hub.params_of(again), tmp_path / "b")
  a, b = tmp_path / "a", tmp_path / "b"
  assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
  assert json.loads((a / "config.json").read_text()) == json.loads((b / "config.json").read_text())


def test_loaded_params_are_device_arrays(tiny_hf_dir):
  model, _ = hub.load_pretrained(tiny_hf_dir)
  for leaf in jax.tree.leaves(hub.params_of(model)):
    assert isinstance(leaf, jax.Array)


def _rewrite(src, dst, edit):
  """Copies the HF checkpoint dir `src` to `dst` with its state dict passed through `edit`."""
  dst.mkdir()
  (dst / "config.json").write_text((src / "config.json").read_text())
  save_file(edit(load_file(str(src / "model.safetensors"))), str(dst / "model.safetensors"))
  return dst


def _tf_names(state):
  return {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
          for k, v in state.items()}


def _no_prefix(state):
  return {k.removeprefix("bert."): v for k, v in state.items()}


@pytest.mark.parametrize("edit", [_no_prefix, _tf_names, lambda s: _tf_names(_no_prefix(s))],
                         ids=["no_bert_prefix", "tf_gamma_beta", "both"])
def test_key_spelling_variants_import_identically(tiny_hf_dir, tmp_path, edit):
  state = load_file(str(tiny_hf_dir / "model.safetensors"))
  assert any(k.startswith("bert.") for k in state) and any(k.endswith("LayerNorm.weight") for k in state)
  base, _ = hub.load_pretrained(tiny_hf_dir)
  variant, fresh = hub.load_pretrained(_rewrite(tiny_hf_dir, tmp_path / "variant", edit))
  assert fresh == []
  assert_params_equal(hub.params_of(base), hub.params_of(variant))


def _drop(*prefixes):
  return lambda state: {k: v for k, v in state.items() if not k.startswith(prefixes)}


@pytest.mark.parametrize("dropped, expect_fresh", [
    (("classifier.",), ["classifier.bias", "classifier.kernel"]),
    (("classifier.", "bert.pooler."),
     ["classifier.bias", "classifier.kernel", "pooler.bias", "pooler.kernel"]),
], ids=["no_classifier", "no_pooler_no_classifier"])
def test_missing_heads_start_fresh_and_leave_the_encoder_intact(tiny_hf_dir, tmp_path, dropped,
                                                                expect_fresh):
  full, _ = hub.load_pretrained(tiny_hf_dir)
  part, fresh = hub.load_pretrained(_rewrite(tiny_hf_dir, tmp_path / "part", _drop(*dropped)))
  assert sorted(fresh) == expect_fresh
  a, b = hub.params_of(full), hub.params_of(part)
  for name in ("embeddings", "layers") + (() if "bert.pooler." in dropped else ("pooler",)):
    assert_params_equal(a[name], b[name])
  # The fresh ones got BertModel's initialisation: N(0, 0.02) kernels, zero biases.
  assert np.all(np.asarray(b["classifier"]["bias"]) == 0)
  assert 0.005 < float(np.std(b["classifier"]["kernel"])) < 0.05
  assert not np.array_equal(np.asarray(a["classifier"]["kernel"]), np.asarray(b["classifier"]["kernel"]))
  if "bert.pooler." in dropped:
    assert 0.01 < float(np.std(b["pooler"]["kernel"])) < 0.03
  assert np.all(np.isfinite(np.asarray(run_ours(part).logits)))
  # Same seed, same fresh values.
  again, _ = hub.load_pretrained(tmp_path / "part")
  assert_params_equal(b, hub.params_of(again))


def test_changing_num_labels_reinitialises_only_the_classifier(tiny_hf_dir):
  model, fresh = hub.load_pretrained(tiny_hf_dir, num_labels=5)
  assert sorted(fresh) == ["classifier.bias", "classifier.kernel"]
  assert model.config.num_labels == 5 and run_ours(model).logits.shape == (3, 5)


def test_pytorch_model_bin_imports_the_same_params_as_safetensors(tiny_hf_dir, tmp_path, make_tiny_hf):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "config.json").write_text((tiny_hf_dir / "config.json").read_text())
  torch.save(make_tiny_hf().state_dict(), bin_dir / "pytorch_model.bin")  # same seed as tiny_hf_dir
  from_bin, fresh = hub.load_pretrained(bin_dir)
  from_st, _ = hub.load_pretrained(tiny_hf_dir)
  assert fresh == []
  assert_params_equal(hub.params_of(from_st), hub.params_of(from_bin))


def test_config_round_trips_through_hf_dict():
  cfg = tiny_config(num_labels=3, label_names=LABELS, hidden_act="gelu_new", layer_norm_eps=1e-7)
  d = cfg.to_hf_dict()
  assert BertConfig.from_hf_dict(d) == cfg
  hf = transformers.BertConfig(**d)
  assert hf.tie_word_embeddings and hf.id2label == dict(enumerate(LABELS))
  assert BertConfig.from_hf_dict(hf.to_dict()) == cfg
