"""What a forward pass returns (`BertOutput`) and which internals it keeps (`Collect`).

Every student architecture (BERT, MobileBERT, BiLSTM) returns a `BertOutput`, and every loss
term reads one, so these types sit below both models/ and methods/.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import flax.struct
import jax

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class Collect:
  """Which internals a forward pass keeps. Hashable, so it can be a static jit argument."""
  hidden_states: bool = False     # embedding output + every layer output
  attention_scores: bool = False  # pre-softmax scores, mask applied, per layer
  attention_probs: bool = False   # post-softmax probabilities (before dropout), per layer
  qkv: bool = False               # per-head queries, keys, values, per layer
  mlm_logits: bool = False        # the MLM head's [B, S, V] logits (needs cfg.mlm_head)

  def __or__(self, other: "Collect") -> "Collect":
    return Collect(*(a or b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))

  @classmethod
  def everything(cls) -> "Collect":
    return cls(True, True, True, True)  # the MLM head is asked for separately


@flax.struct.dataclass
class BertOutput:
  # None only for a cached teacher, whose logits are all the step has (core/state.py).
  last_hidden: Optional[Array] = None                  # [B, S, H]
  pooled: Optional[Array] = None                       # [B, H]
  logits: Optional[Array] = None                       # [B, num_labels]
  mlm_logits: Optional[Array] = None                   # [B, S, V]
  hidden_states: Optional[tuple[Array, ...]] = None    # L+1 x [B, S, H], embeddings first
  attention_scores: Optional[tuple[Array, ...]] = None  # L x [B, N, S, S]
  attention_probs: Optional[tuple[Array, ...]] = None  # L x [B, N, S, S]
  queries: Optional[tuple[Array, ...]] = None          # L x [B, N, S, D]
  keys: Optional[tuple[Array, ...]] = None             # L x [B, N, S, D]
  values: Optional[tuple[Array, ...]] = None           # L x [B, N, S, D]
