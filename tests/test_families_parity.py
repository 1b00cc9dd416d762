"""RoBERTa / XLM-RoBERTa, DistilBERT and ELECTRA checkpoints: import, export, parity.

The references are transformers' own PyTorch classes on tiny random configs (no downloads):
a checkpoint written by `save_pretrained` loads through `hub.load_pretrained`, and its hidden
states, attention probabilities and logits match transformers' in float32 with padding in the
batch; `hub.save_pretrained` writes a directory the matching `AutoModelForSequenceClassification`
loads with no missing or unexpected keys, whose state dict equals the original's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from jaxdistill.core.outputs import Collect
from jaxdistill.models import BertConfig, BertModel, hub

TOL = 1e-4
VOCAB, SEQ = 99, 9

SMALL = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=48, max_position_embeddings=40, hidden_dropout_prob=0.1,
             attention_probs_dropout_prob=0.1, num_labels=3)
CONFIGS = {
    "roberta": lambda: transformers.RobertaConfig(
        **SMALL, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        layer_norm_eps=1e-5),
    "xlm-roberta": lambda: transformers.XLMRobertaConfig(
        **SMALL, type_vocab_size=1, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        layer_norm_eps=1e-5),
    "electra": lambda: transformers.ElectraConfig(**SMALL, embedding_size=16, type_vocab_size=2),
    "electra-same-width": lambda: transformers.ElectraConfig(**SMALL, embedding_size=32),
    "distilbert": lambda: transformers.DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=48, max_position_embeddings=40,
        num_labels=3),
    "distilbert-sinusoidal": lambda: transformers.DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=48, max_position_embeddings=40,
        num_labels=3, sinusoidal_pos_embds=True),
}


def hf_model(name: str, seed: int = 0, cls=transformers.AutoModelForSequenceClassification,
             **config_changes):
  """A random transformers model of the family, every weight perturbed off its init (so a
  swapped or transposed tensor cannot hide)."""
  torch.manual_seed(seed)
  config = CONFIGS[name]()
  for k, v in config_changes.items():
    setattr(config, k, v)
  if hasattr(cls, "from_config"):  # an Auto class
    model = cls.from_config(config, attn_implementation="eager")
  else:
    config._attn_implementation = "eager"
    model = cls(config)
  model.eval()
  with torch.no_grad():
    for p in model.parameters():
      p.add_(torch.randn_like(p) * 0.1)
  return model


def inputs(pad: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """[3, SEQ] ids / mask / token types, rows of 9, 5 and 2 real tokens, pads = `pad`."""
  rng = np.random.default_rng(seed)
  mask = (np.arange(SEQ)[None] < np.array([[SEQ], [5], [2]])).astype(np.int32)
  ids = rng.integers(3, VOCAB, (3, SEQ)).astype(np.int32)
  ids = np.where(mask == 1, ids, pad).astype(np.int32)
  types = (rng.integers(0, 2, (3, SEQ)) * mask).astype(np.int32)
  return ids, mask, types


def max_diff(a, b) -> float:
  return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def compare(model, hf, *, types: bool):
  """Max |ours - transformers| over hidden states, attentions and logits (padded batch)."""
  ids, mask, tt = inputs(hf.config.pad_token_id)
  kwargs = dict(input_ids=torch.from_numpy(ids).long(), attention_mask=torch.from_numpy(mask).long())
  if types:
    kwargs["token_type_ids"] = torch.from_numpy(tt).long()
  with torch.no_grad():
    ref = hf(**kwargs, output_hidden_states=True, output_attentions=True)
  with jax.default_matmul_precision("highest"):
    out = model(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(tt) if types else None,
                collect=Collect(hidden_states=True, attention_probs=True))
  errs = {"logits": max_diff(out.logits, ref.logits.numpy())}
  errs["hidden"] = max(max_diff(a, b.numpy())  # pad positions too: both compute them alike
                       for a, b in zip(out.hidden_states, ref.hidden_states, strict=True))
  errs["attentions"] = max(max_diff(a, b.numpy())
                           for a, b in zip(out.attention_probs, ref.attentions, strict=True))
  return errs


@pytest.mark.parametrize("name", list(CONFIGS))
def test_import_parity_and_export_round_trip(name, tmp_path):
  hf = hf_model(name)
  hf.save_pretrained(tmp_path / "hf")
  model, fresh = hub.load_pretrained(str(tmp_path / "hf"))
  assert fresh == []
  family = name.split("-same")[0].split("-sinus")[0]
  assert isinstance(model, BertModel) and model.config.family == family
  errs = compare(model, hf, types=family == "electra")
  print(name, errs)
  assert max(errs.values()) < TOL, errs

  hub.save_pretrained(model.config, hub.params_of(model), tmp_path / "ours")
  back, info = transformers.AutoModelForSequenceClassification.from_pretrained(
      str(tmp_path / "ours"), output_loading_info=True, attn_implementation="eager")
  assert type(back) is type(hf)
  assert not any(info.values()), info  # no missing / unexpected / mismatched keys
  want, got = hf.state_dict(), back.state_dict()
  assert set(want) == set(got)
  for k in want:
    assert torch.equal(want[k], got[k]), k


@pytest.mark.parametrize("name", ["roberta", "distilbert", "electra"])
def test_our_random_model_exports_and_matches(name, tmp_path):
  """A model built by us (not imported) exports to a transformers model that computes the same."""
  hf_cfg = CONFIGS[name]().to_dict()
  cfg = BertConfig.from_hf_dict({**hf_cfg, "architectures": [f"{type(hf_model(name)).__name__}"]},
                                hidden_dropout=0.0, attention_dropout=0.0)
  model = BertModel(cfg, rngs=__import__("flax").nnx.Rngs(3))
  hub.save_pretrained(cfg, hub.params_of(model), tmp_path)
  back, info = transformers.AutoModelForSequenceClassification.from_pretrained(
      str(tmp_path), output_loading_info=True, attn_implementation="eager")
  assert not any(info.values()), info
  errs = compare(model, back.eval(), types=name == "electra")
  assert max(errs.values()) < TOL, errs
