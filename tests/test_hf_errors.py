"""Loading mistakes fail fast with a clear message.

Each broken checkpoint is made from one written by transformers' own `save_pretrained` (the
`tiny_hf_dir` fixture) and then damaged by hand, so the reference for "valid" is independent
of our exporter; the tests pin the exception type and the words that tell the user what to fix.
"""

from __future__ import annotations

import json
import time

import jax.numpy as jnp
import pytest
from flax import nnx

from jaxdistill.models import BertConfig, BertModel, hub, tiny_config


def _edit_config(model_dir, **changes):
  path = model_dir / "config.json"
  cfg = json.loads(path.read_text())
  cfg.update(changes)
  path.write_text(json.dumps(cfg))


def test_directory_without_weights(tiny_hf_dir):
  (tiny_hf_dir / "model.safetensors").unlink()
  with pytest.raises(FileNotFoundError,
                     match=r"has no weights: expected one of model\.safetensors, pytorch_model\.bin"):
    hub.load_pretrained(tiny_hf_dir)


def test_directory_without_config(tiny_hf_dir):
  (tiny_hf_dir / "config.json").unlink()
  with pytest.raises(FileNotFoundError, match="has no config.json"):
    hub.load_pretrained(tiny_hf_dir)


def test_config_that_is_not_bert(tiny_hf_dir):
  _edit_config(tiny_hf_dir, model_type="gpt2")
  with pytest.raises(ValueError, match=r"model_type='gpt2'.*BERT checkpoints .*only"):
    hub.load_pretrained(tiny_hf_dir)


def test_non_bert_config_fails_before_its_weights_are_read(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_embd": 768}))
  with pytest.raises(ValueError, match="model_type='gpt2'"):  # not "has no weights"
    hub.load_pretrained(tmp_path)


def test_relative_position_embeddings_are_refused(tiny_hf_dir):
  _edit_config(tiny_hf_dir, position_embedding_type="relative_key")
  with pytest.raises(ValueError, match="only absolute position embeddings"):
    hub.load_pretrained(tiny_hf_dir)


def test_config_width_disagrees_with_weights(tiny_hf_dir):
  _edit_config(tiny_hf_dir, hidden_size=64)  # the weights are 32 wide
  with pytest.raises(ValueError, match=r"'embeddings.word_embeddings.weight' has shape \(128, 32\) "
                                       r"but config.json implies \(128, 64\)"):
    hub.load_pretrained(tiny_hf_dir)


def test_config_intermediate_size_disagrees_with_weights(tiny_hf_dir):
  _edit_config(tiny_hf_dir, intermediate_size=48)  # the weights have 64
  with pytest.raises(ValueError, match=r"'encoder.layer.0.intermediate.dense.weight' has shape "
                                       r"\(64, 32\) but config.json implies \(48, 32\)"):
    hub.load_pretrained(tiny_hf_dir)


def test_config_has_more_layers_than_the_weights(tiny_hf_dir):
  _edit_config(tiny_hf_dir, num_hidden_layers=3)
  with pytest.raises(ValueError, match=r"no weight 'encoder.layer.2.attention.self.query.weight'.*"
                                       r"num_hidden_layers=3"):
    hub.load_pretrained(tiny_hf_dir)


@pytest.mark.parametrize("path", ["/nonexistent/jaxdistill/model", "./no/such/dir",
                                  "~/no-such-jaxdistill-dir"])
def test_nonexistent_directory(path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    hub.load_pretrained(path)


def test_nonexistent_absolute_tmp_path(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"):
    hub.resolve_model_dir(str(tmp_path / "missing"))


def test_offline_hub_id_fails_fast_with_one_line(monkeypatch):
  # Set after huggingface_hub may have been imported (and read its constants): the switch
  # must still be honoured.
  import huggingface_hub  # noqa: F401
  monkeypatch.setenv("HF_HUB_OFFLINE", "1")
  start = time.monotonic()
  with pytest.raises(FileNotFoundError) as err:
    hub.load_pretrained("jaxdistill-tests/no-such-model")
  assert time.monotonic() - start < 10
  msg = str(err.value)
  assert "\n" not in msg
  assert "'jaxdistill-tests/no-such-model'" in msg and "HF_HUB_OFFLINE" in msg
  assert "local checkpoint directory" in msg


def test_hidden_not_divisible_by_heads(tiny_hf_dir):
  with pytest.raises(ValueError, match="hidden_size 30 is not divisible by num_heads 4"):
    tiny_config(hidden_size=30)
  _edit_config(tiny_hf_dir, num_attention_heads=5)
  with pytest.raises(ValueError, match="hidden_size 32 is not divisible by num_heads 5"):
    hub.load_pretrained(tiny_hf_dir)


@pytest.mark.parametrize("bad, match", [
    (dict(hidden_act="mish"), "hidden_act 'mish' is not supported"),
    (dict(problem_type="multi_label_classification"), "problem_type .* is not supported"),
    (dict(problem_type="regression", num_labels=2), "regression head has num_labels=1"),
    (dict(num_labels=2, label_names=("a", "b", "c")), "3 label_names for num_labels=2"),
    (dict(dtype="float17"), "dtype='float17' is not a dtype"),
])
def test_invalid_configs(bad, match):
  with pytest.raises(ValueError, match=match):
    BertConfig(**bad)


def test_with_mlm_on_a_model_without_mlm_head():
  model = nnx.eval_shape(lambda: BertModel(tiny_config(), rngs=nnx.Rngs(0)))
  with pytest.raises(ValueError, match=r"with_mlm=True needs a model built with BertConfig\(mlm_head=True\)"):
    model(jnp.ones((1, 4), jnp.int32), with_mlm=True)
