"""Tokenise raw splits with the model's own (fast) tokenizer into padded numpy arrays.

Arrays are right-padded to max_length by us (not the tokenizer), so the layout
does not depend on the tokenizer's padding_side and attention masks can be
rebuilt from lengths alone.
"""

from __future__ import annotations

import hashlib
import itertools
import json

import numpy as np

from jaxdistill.data.task_data import RawSplit, RawTask, Split, TaskData

# Rows per tokenizer call: large enough for the Rust batch parallelism, small
# enough that the python lists it returns stay modest.
CHUNK_ROWS = 4096


def tokenizer_fingerprint(tokenizer) -> str:
  """Hash of what decides token ids: vocab, normalizer, pre-tokenizer, special tokens.

  The fast tokenizer's JSON also records the truncation/padding state of the
  *last call*, which we drop so the hash is stable across calls.
  """
  backend = getattr(tokenizer, "backend_tokenizer", None)
  if backend is not None:
    state = json.loads(backend.to_str())
    state.pop("truncation", None)
    state.pop("padding", None)
    payload = json.dumps(state, sort_keys=True)
  else:  # slow tokenizer: the vocab plus the class is the best we can do
    payload = json.dumps(sorted(tokenizer.get_vocab().items())) + repr(getattr(tokenizer, "do_lower_case", None))
  digest = hashlib.sha256(f"{type(tokenizer).__name__}\n{payload}".encode()).hexdigest()
  return digest[:24]


def tokenize_split(raw: RawSplit, tokenizer, max_length: int) -> Split:
  n = len(raw)
  pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
  input_ids = np.full((n, max_length), pad_id, np.int32)
  token_type_ids = np.zeros((n, max_length), np.int32)
  lengths = np.zeros(n, np.int32)
  positions = np.arange(max_length)[None, :]
  for start in range(0, n, CHUNK_ROWS):
    stop = min(start + CHUNK_ROWS, n)
    second = raw.text_pairs[start:stop] if raw.text_pairs is not None else None
    enc = tokenizer(
        raw.texts[start:stop],
        second,
        truncation=True,  # longest_first for pairs: trims the longer segment first
        max_length=max_length,
        padding=False,
        return_token_type_ids=True,
        return_attention_mask=False,
    )
    ids, types = enc["input_ids"], enc["token_type_ids"]
    chunk_lengths = np.fromiter(map(len, ids), np.int32, count=stop - start)
    # Row-major boolean scatter writes each row's tokens left-aligned, in order.
    mask = positions < chunk_lengths[:, None]
    input_ids[start:stop][mask] = np.fromiter(itertools.chain.from_iterable(ids), np.int32)
    token_type_ids[start:stop][mask] = np.fromiter(itertools.chain.from_iterable(types), np.int32)
    lengths[start:stop] = chunk_lengths
  return Split(raw.name, input_ids, token_type_ids, lengths, raw.labels, raw.texts, raw.text_pairs, raw.has_labels)


def tokenize_task(raw: RawTask, tokenizer, max_length: int) -> TaskData:
  splits = {name: tokenize_split(split, tokenizer, max_length) for name, split in raw.splits.items()}
  return TaskData(raw.name, raw.label_names, raw.is_regression, splits, raw.text_columns)
