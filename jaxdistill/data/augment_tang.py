"""The transfer-set augmentation of Tang et al. 2019 (Section 3.3), written once to a file.

Each synthetic example is made from a training example's whitespace-separated words:

  1. masking: each word, independently with probability p_mask, becomes "[MASK]" (the
     teacher tokenizer's mask token, so teacher and student both see the token id of an
     unknown word);
  2. n-gram sampling: with probability p_ng, the (masked) example is cut to a random
     contiguous n-gram, n drawn uniformly from 1..5 (the whole example if it is shorter).

This is repeated n_iter times per example (the paper: 20; p_mask = 0.1, p_ng = 0.25).
Synthetic texts equal to an original or to an earlier synthetic text are dropped, so every
row costs one teacher forward pass for something new. Text-pair tasks augment each segment
on its own.

Not implemented: the paper's POS-guided word replacement (p_pos: a word becomes another word
of the same part-of-speech tag, drawn from that tag's unigram distribution). It needs a
part-of-speech tagger, and none is installed or installable offline here (NLTK's and
spaCy's taggers download their models at run time); the word slot it would take
(p_mask <= u < p_mask + p_pos) is simply left unchanged.

Deterministic: example i's draws come from `numpy.random.default_rng([seed, i])`, so a row
does not depend on the order or number of the examples around it.

Output: a jsonl with the task's text column(s) and `label`: the originals keep their labels,
synthetic rows have `label: null`, which `config.data.train_override` reads as unlabelled
(label -1: no hard-label loss, the distillation term alone). Written to a temporary file
and renamed, with a `.meta.json` beside it holding the settings, so a finished file is
reused and a file made with other settings is never silently taken for this one.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from jaxdistill import data as data_lib
from jaxdistill import distributed
from jaxdistill.core.errors import ConfigError
from jaxdistill.core.progress import ProgressBar

log = logging.getLogger(__name__)

MASK = "[MASK]"
MAX_NGRAM = 5
FILE_NAME = "augmented.jsonl"


def check_settings(p_mask: float, p_ng: float, n_iter: int) -> None:
  for name, p in (("augment_p_mask", p_mask), ("augment_p_ng", p_ng)):
    if not 0.0 <= float(p) <= 1.0:
      raise ValueError(f"bilstm.{name}={p} is not a probability; use a value in [0, 1]")
  if isinstance(n_iter, bool) or int(n_iter) != n_iter or n_iter < 0:
    raise ValueError(f"bilstm.augment_n_iter={n_iter} must be an integer >= 0 (0 = originals only)")


def augment_words(words: Sequence[str], rng: np.random.Generator, p_mask: float,
                  p_ng: float) -> list[str]:
  """One synthetic word list from `words`: masking, then n-gram sampling (module docstring)."""
  draws = rng.random(len(words))
  out = [MASK if u < p_mask else w for w, u in zip(words, draws)]
  if out and rng.random() < p_ng:
    n = min(int(rng.integers(1, MAX_NGRAM + 1)), len(out))
    start = int(rng.integers(0, len(out) - n + 1))
    out = out[start:start + n]
  return out


def synthetic_texts(segments: Sequence[str], rng: np.random.Generator, p_mask: float,
                    p_ng: float) -> tuple[str, ...]:
  """One synthetic example: each segment (one, or two for pair tasks) augmented on its own."""
  return tuple(" ".join(augment_words(s.split(), rng, p_mask, p_ng)) for s in segments)


def augment_examples(examples: Sequence[tuple[str, ...]], *, p_mask: float, p_ng: float,
                     n_iter: int, seed: int, on_example=None) -> Iterator[tuple[int, bool, tuple[str, ...]]]:
  """(example index, synthetic?, segments) in output order: each original, then its new
  synthetic examples. A synthetic example equal to anything already emitted is dropped."""
  check_settings(p_mask, p_ng, n_iter)
  seen: set[tuple[str, ...]] = set()
  for i, original in enumerate(examples):
    original = tuple(original)
    seen.add(original)
    yield i, False, original
    rng = np.random.default_rng([seed, i])
    for _ in range(n_iter):
      synth = synthetic_texts(original, rng, p_mask, p_ng)
      if synth not in seen and any(s.strip() for s in synth):
        seen.add(synth)
        yield i, True, synth
    if on_example is not None:
      on_example(i + 1)


def _label_value(raw, label):
  if raw.is_regression:
    return None if not np.isfinite(label) else float(label)
  if int(label) < 0:
    return None
  return raw.label_names[int(label)] if raw.label_names else int(label)


def write_augmented(raw_task, out_path: Path, *, p_mask: float, p_ng: float, n_iter: int,
                    seed: int, label_column: str = "label", show_progress: bool = True,
                    meta: Optional[dict] = None) -> dict:
  """Augments `raw_task`'s train split into `out_path` (jsonl); returns the row counts.
  With `meta`, writes it (plus the counts) to `meta_path(out_path)` before the jsonl is
  renamed into place, so a finished file always has its settings beside it."""
  split = raw_task.splits["train"]
  columns = raw_task.text_columns
  segments = [split.texts] + ([split.text_pairs] if len(columns) > 1 else [])
  examples = list(zip(*segments))
  out_path = Path(out_path)
  out_path.parent.mkdir(parents=True, exist_ok=True)
  tmp = out_path.with_name(out_path.name + ".tmp")
  bar = ProgressBar("augment (Tang et al.)", len(examples), active=show_progress)
  counts = {"originals": 0, "synthetic": 0}

  def progress(done: int) -> None:
    if done % 256 == 0 or done == len(examples):
      bar.update(done, f"{counts['originals'] + counts['synthetic']} rows")

  try:
    with tmp.open("w", encoding="utf-8") as f:
      for i, synthetic, texts in augment_examples(examples, p_mask=p_mask, p_ng=p_ng,
                                                  n_iter=n_iter, seed=seed, on_example=progress):
        row = dict(zip(columns, texts))
        if not synthetic:
          row[label_column] = _label_value(raw_task, split.labels[i])
          counts["originals"] += 1
        else:
          row[label_column] = None  # unlabelled: distillation only
          counts["synthetic"] += 1
        f.write(json.dumps(row) + "\n")  # ASCII escapes: no raw U+2028 for a reader to split on
  finally:
    bar.close()
  if meta is not None:
    _write_json(meta_path(out_path), {**meta, "rows": sum(counts.values()), **counts})
  os.replace(tmp, out_path)
  return counts


def _write_json(path: Path, obj) -> None:
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_text(json.dumps(obj, indent=2))
  os.replace(tmp, path)


def meta_path(out_path: Path) -> Path:
  return Path(out_path).with_name(Path(out_path).name.replace(".jsonl", "") + ".meta.json")


def settings_of(config) -> dict:
  b, d = config.bilstm, config.data
  return {"p_mask": float(b.augment_p_mask), "p_ng": float(b.augment_p_ng),
          "n_iter": int(b.augment_n_iter), "seed": int(b.augment_seed), "task": d.task,
          "path": d.path, "train_file": d.train_file, "max_examples": int(d.max_examples)}


def runner(config, workdir: Path) -> str:
  """Stage kind "tang_augment": writes <workdir>/augmented.jsonl once; returns its path."""
  workdir = Path(workdir)
  out = workdir / FILE_NAME
  settings = settings_of(config)
  check_settings(settings["p_mask"], settings["p_ng"], settings["n_iter"])
  if out.exists():
    made = json.loads(meta_path(out).read_text()) if meta_path(out).exists() else {}
    if made.get("settings") != settings:
      raise ConfigError(f"{out} was made with other settings ({made.get('settings')}); delete "
                        f"{workdir} to regenerate it, or use another --workdir")
    log.info("augmented data %s exists (%d rows); skipped", out, made.get("rows", -1))
    return str(out)
  if config.data.train_override:
    raise ConfigError("the tang_augment stage augments the task's own train split; leave "
                      "data.train_override empty in that stage (set it in the next one)")
  if distributed.is_main():
    raw = data_lib.load_raw_task(config.data)
    label_column = config.data.label_column if config.data.task == "files" else "label"
    counts = write_augmented(raw, out, p_mask=settings["p_mask"], p_ng=settings["p_ng"],
                             n_iter=settings["n_iter"], seed=settings["seed"],
                             label_column=label_column, meta={"settings": settings})
    log.info("wrote %s: %d originals + %d synthetic examples", out, counts["originals"],
             counts["synthetic"])
  distributed.sync(f"augment {workdir}")  # every process reads the file next
  return str(out)


def read_rows(path: Path) -> list[dict]:
  """The rows of an augmented file (for tests and inspection)."""
  return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").split("\n") if line]


__all__ = ["MASK", "augment_examples", "augment_words", "read_rows", "runner", "synthetic_texts",
           "write_augmented"]
