"""Tiny real-format checkpoints for tests and smoke runs.

`tiny_checkpoint(dir)` writes a small random BERT in the Hugging Face directory format with
the shipped MiniLM tokenizer (so real text tokenises), letting a whole train run finish in
seconds on a CPU.
"""

from __future__ import annotations

from pathlib import Path

from flax import nnx

from jaxdistill.models import BertConfig, BertModel
from jaxdistill.models.hub import params_of, resolve_model_dir, save_pretrained


def tiny_checkpoint(out_dir, *, num_layers: int = 2, hidden_size: int = 32, num_heads: int = 4,
                    intermediate_size: int = 64, num_labels: int = 2, label_names=(),
                    seed: int = 0, tokenizer_source: str = "all-MiniLM-L6-v2") -> Path:
  tok_dir = resolve_model_dir(tokenizer_source)
  cfg = BertConfig(vocab_size=30522, hidden_size=hidden_size, num_layers=num_layers,
                   num_heads=num_heads, intermediate_size=intermediate_size,
                   max_position_embeddings=128, num_labels=num_labels,
                   label_names=tuple(label_names))
  model = BertModel(cfg, rngs=nnx.Rngs(seed))
  return save_pretrained(cfg, params_of(model), out_dir, tokenizer_dir=tok_dir)
