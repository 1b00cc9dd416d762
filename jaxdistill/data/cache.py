"""On-disk cache of tokenised tasks, so a second load does not re-tokenise.

Layout: <cache_dir>/<task>-<key>/{meta.json, <split>.npz, <split>.texts.json}.
The key hashes everything that can change the arrays: task + data config
values (incl. max_length and max_examples), input file paths/mtimes/sizes
(Source.fingerprint) and the tokenizer's vocab/normalizer hash. Entries are written to a temp dir and
renamed into place, so concurrent processes never read half-written entries.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile

import numpy as np

from jaxdistill.data.config import DataSpec
from jaxdistill.data.task_data import Source, Split, TaskData
from jaxdistill.data.tokenization import tokenizer_fingerprint

logger = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the stored format or tokenisation logic changes
_ARRAYS = ("input_ids", "token_type_ids", "lengths", "labels")


def cache_entry_dir(cache_dir: str, spec: DataSpec, source: Source, tokenizer) -> str:
  payload = {
      "version": CACHE_VERSION,
      "spec": dataclasses.asdict(spec),
      "source": source.fingerprint,
      # The vocab/normalizer hash, not the tokenizer's path: the same tokenizer saved in a
      # teacher checkpoint and in the asset directory should share cache entries.
      "tokenizer": tokenizer_fingerprint(tokenizer),
  }
  key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]
  slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", source.name)
  return os.path.join(cache_dir, f"{slug}-{key}")


def load_cached(entry: str) -> TaskData | None:
  meta_path = os.path.join(entry, "meta.json")
  if not os.path.isfile(meta_path):
    return None
  try:
    with open(meta_path, encoding="utf-8") as f:
      meta = json.load(f)
    splits = {}
    for name, info in meta["splits"].items():
      with np.load(os.path.join(entry, f"{name}.npz")) as arrays:
        values = {k: arrays[k] for k in _ARRAYS}
      with open(os.path.join(entry, f"{name}.texts.json"), encoding="utf-8") as f:
        texts = json.load(f)
      splits[name] = Split(name, **values, texts=texts["texts"], text_pairs=texts["text_pairs"],
                           has_labels=info["has_labels"])
  except (OSError, ValueError, KeyError) as exc:  # unreadable entry: rebuild rather than fail
    logger.warning("ignoring unreadable data cache entry %s (%s)", entry, exc)
    return None
  logger.info("loaded tokenised %s from cache %s", meta["name"], entry)
  return TaskData(meta["name"], meta["label_names"], meta["is_regression"], splits, tuple(meta["text_columns"]))


def save_cached(entry: str, task: TaskData) -> None:
  parent = os.path.dirname(entry)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
  try:
    for name, split in task.splits.items():
      np.savez(os.path.join(tmp, f"{name}.npz"), **{k: getattr(split, k) for k in _ARRAYS})
      with open(os.path.join(tmp, f"{name}.texts.json"), "w", encoding="utf-8") as f:
        json.dump({"texts": split.texts, "text_pairs": split.text_pairs}, f, ensure_ascii=False)
    meta = {
        "name": task.name,
        "label_names": task.label_names,
        "is_regression": task.is_regression,
        "text_columns": list(task.text_columns),
        "splits": {name: {"has_labels": s.has_labels, "size": len(s)} for name, s in task.splits.items()},
    }
    # meta.json last: its presence marks a complete entry.
    with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
      json.dump(meta, f, indent=1)
    try:
      os.rename(tmp, entry)
      logger.info("cached tokenised %s at %s", task.name, entry)
    except OSError:  # another process stored the same entry first; theirs is identical
      pass
  finally:
    shutil.rmtree(tmp, ignore_errors=True)
