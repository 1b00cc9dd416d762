"""RoBERTa / DistilBERT / ELECTRA checkpoints beyond the sequence classifier: pretraining
checkpoints (fresh heads, pretraining weights dropped), span and token heads, and the loading
mistakes that must stop with a one-line message. References are transformers' own classes."""

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

from jaxdistill.core.outputs import Collect
from jaxdistill.models import BertConfig, BertModel, hub
from test_families_parity import CONFIGS, TOL, hf_model, inputs, max_diff

AUTO = transformers


def _hidden_errors(model, hf, *, types: bool) -> float:
  ids, mask, tt = inputs(hf.config.pad_token_id)
  kw = dict(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
  if types:
    kw["token_type_ids"] = torch.from_numpy(tt).long()
  with torch.no_grad():
    ref = hf(**kw, output_hidden_states=True)
  with jax.default_matmul_precision("highest"):
    out = model(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(tt) if types else None,
                collect=Collect(hidden_states=True))
  return max(max_diff(a, b.numpy()) for a, b in zip(out.hidden_states, ref.hidden_states, strict=True))


@pytest.mark.parametrize("name,cls,fresh", [
    ("roberta", AUTO.RobertaForMaskedLM, {"pooler", "classifier"}),
    ("roberta", AUTO.RobertaModel, {"pooler", "classifier"}),  # its BERT-style pooler is dropped
    ("xlm-roberta", AUTO.XLMRobertaForMaskedLM, {"pooler", "classifier"}),
    ("electra", AUTO.ElectraForPreTraining, {"pooler", "classifier"}),
    ("electra", AUTO.ElectraForMaskedLM, {"pooler", "classifier"}),  # a generator
    ("distilbert", AUTO.DistilBertForMaskedLM, {"pooler", "classifier"}),
    ("distilbert", AUTO.DistilBertModel, {"pooler", "classifier"}),
])
def test_pretraining_checkpoint_loads_with_a_fresh_head(name, cls, fresh, tmp_path):
  hf = hf_model(name, cls=cls)
  hf.save_pretrained(tmp_path)
  model, fresh_paths = hub.load_pretrained(str(tmp_path), num_labels=3)
  assert {p.split(".")[0] for p in fresh_paths} == fresh
  assert model.config.family == name and model.config.head == "sequence"
  assert _hidden_errors(model, hf, types=name == "electra") < TOL
  assert np.all(np.isfinite(np.asarray(model(jnp.asarray(inputs(1)[0])).logits)))


@pytest.mark.parametrize("name,cls,head", [
    ("roberta", AUTO.AutoModelForQuestionAnswering, "span"),
    ("roberta", AUTO.AutoModelForTokenClassification, "token"),
    ("distilbert", AUTO.AutoModelForQuestionAnswering, "span"),
    ("distilbert", AUTO.AutoModelForTokenClassification, "token"),
    ("electra", AUTO.AutoModelForQuestionAnswering, "span"),
    ("electra", AUTO.AutoModelForTokenClassification, "token"),
])
def test_span_and_token_heads_round_trip(name, cls, head, tmp_path):
  hf = hf_model(name, cls=cls, **(dict(num_labels=2) if head == "span" else {}))
  hf.save_pretrained(tmp_path / "hf")
  model, fresh = hub.load_pretrained(str(tmp_path / "hf"))
  assert fresh == [] and model.config.head == head
  ids, mask, tt = inputs(hf.config.pad_token_id)
  kw = dict(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
  with torch.no_grad():
    ref = hf(**kw)
  with jax.default_matmul_precision("highest"):
    logits = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask)).logits)
  want = (np.stack([ref.start_logits.numpy(), ref.end_logits.numpy()], -1) if head == "span"
          else ref.logits.numpy())
  assert max_diff(logits, want) < TOL

  hub.save_pretrained(model.config, hub.params_of(model), tmp_path / "ours")
  back, info = cls.from_pretrained(str(tmp_path / "ours"), output_loading_info=True)
  assert type(back) is type(hf) and not any(info.values()), info
  for k, v in hf.state_dict().items():
    assert torch.equal(v, back.state_dict()[k]), k


def test_replaced_head_starts_fresh(tmp_path):
  hf_model("distilbert").save_pretrained(tmp_path)  # 3 labels
  model, fresh = hub.load_pretrained(str(tmp_path), num_labels=5)
  assert sorted(fresh) == ["classifier.bias", "classifier.kernel", "pooler.bias", "pooler.kernel"]
  assert model(jnp.asarray(inputs(0)[0])).logits.shape == (3, 5)


def test_dropout_trains_every_family(tmp_path):
  for name in ("roberta", "electra", "distilbert"):
    hf_model(name).save_pretrained(tmp_path / name)
    model, _ = hub.load_pretrained(str(tmp_path / name))
    ids = jnp.asarray(inputs(1)[0])
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
      m = nnx.merge(graphdef, p, rest)
      return jnp.sum(m(ids, dropout_key=jax.random.key(0)).logits ** 2)

    grads = jax.grad(loss)(params)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree.leaves(grads)), name
    train = model(ids, dropout_key=jax.random.key(0)).logits
    assert not np.allclose(np.asarray(train), np.asarray(model(ids).logits)), name


# ---- mistakes -----------------------------------------------------------------------------
def test_unknown_model_type_names_the_supported_ones(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "deberta-v2"}))
  with pytest.raises(ValueError, match=r"model_type='deberta-v2'.*'bert', 'roberta', 'xlm-roberta', "
                                       r"'electra', 'distilbert'"):
    hub.load_pretrained(tmp_path)


def test_unmapped_weights_are_listed_and_stop_the_load(tmp_path):
  hf_model("roberta").save_pretrained(tmp_path)
  state = load_file(str(tmp_path / "model.safetensors"))
  state["roberta.encoder.layer.0.attention.self.distance_embedding.weight"] = np.zeros((7, 8), np.float32)
  state["roberta.encoder.rel_bias.weight"] = np.zeros((3,), np.float32)
  save_file(state, str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError, match=r"does not map: encoder.layer.0.attention.self.distance_embedding"
                                       r".weight, encoder.rel_bias.weight;"):
    hub.load_pretrained(str(tmp_path))


def test_missing_encoder_weight_is_an_error_not_fresh(tmp_path):
  hf_model("distilbert").save_pretrained(tmp_path)
  state = load_file(str(tmp_path / "model.safetensors"))
  del state["distilbert.transformer.layer.1.ffn.lin2.weight"]
  save_file(state, str(tmp_path / "model.safetensors"))
  with pytest.raises(ValueError, match=r"no weight 'transformer.layer.1.ffn.lin2.weight'"):
    hub.load_pretrained(str(tmp_path))


@pytest.mark.parametrize("kwargs,match", [
    (dict(family="gpt2"), r"family 'gpt2' is not supported; use one of"),
    (dict(family="roberta", mlm_head=True), r"mlm_head=True is BERT-only"),
    (dict(family="roberta", embedding_size=16), r"embedding_size is ELECTRA's"),
    (dict(family="distilbert"), r"DistilBERT has no token types; set type_vocab_size=0"),
])
def test_config_mistakes(kwargs, match):
  with pytest.raises(ValueError, match=match):
    BertConfig(**kwargs)


def test_bert_config_json_is_unchanged_by_the_family_fields():
  d = BertConfig().to_hf_dict()
  assert d["model_type"] == "bert" and "family" not in d and "embedding_size" not in d
  assert BertConfig.from_hf_dict(d) == BertConfig()


def test_sinusoidal_positions_start_as_distilberts():
  hf = hf_model("distilbert-sinusoidal")
  hf.base_model._init_weights(hf.base_model.embeddings)  # the fixed table transformers builds
  cfg = BertConfig.from_hf_dict(hf.config.to_dict())
  assert cfg.sinusoidal_positions
  table = np.asarray(BertModel(cfg, rngs=nnx.Rngs(0)).embeddings.position.embedding[...])
  want = hf.distilbert.embeddings.position_embeddings.weight.detach().numpy()
  assert max_diff(table, want) < 1e-6


def test_max_sequence_length_counts_robertas_pad_offset():
  assert BertConfig.from_hf_dict(CONFIGS["roberta"]().to_dict()).max_sequence_length == 40 - 2
  assert BertConfig().max_sequence_length == BertConfig().max_position_embeddings


def test_roberta_max_length_counts_the_pad_offset():
  from jaxdistill.models import BertConfig
  from jaxdistill.train.build import check_max_length
  cfg = BertConfig(family="roberta", max_position_embeddings=34, pad_token_id=1, type_vocab_size=1,
                   hidden_size=32, num_layers=1, num_heads=4, intermediate_size=64, vocab_size=100)
  check_max_length(32, cfg, "teacher", "x")  # 34 rows hold 32 tokens
  with pytest.raises(ValueError, match=r"position table \(32 tokens"):
    check_max_length(33, cfg, "teacher", "x")
