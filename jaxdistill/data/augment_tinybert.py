"""TinyBERT's task data augmentation (Jiao et al. 2020, Algorithm 1), written once to a file.

For every word w of a training sentence (the tokenizer's own word split: its normaliser, then
whitespace/punctuation pre-tokenisation) the candidates C(w) are
- w a single word-piece: the K most probable words of a masked-LM at w's position, with w
  replaced by [MASK] (one forward pass per word; the rest of the sentence unchanged);
- w several word-pieces: its K nearest words by cosine similarity in word-embedding space.
  The paper uses GloVe; there is no GloVe offline here, so the space is the masked-LM's own
  input word-piece embeddings: w's vector is the mean of its pieces' embeddings, and the
  neighbours are vocabulary entries that are whole words (see below).
Then each of N_a augmented sentences replaces every word, independently with probability p_t,
by a uniformly drawn member of C(w).

Choices, following the authors' code (huawei-noah/Pretrained-Language-Model,
TinyBERT/data_augmentation.py) where the paper is silent:
- Only alphabetic words outside a stop-word list are replaced (punctuation, numbers and
  function words such as "not" stay, so a replacement cannot flip a negation).
- Candidates come from the original sentence (one word masked at a time), computed once per
  word, and the N_a sentences are drawn from them; repeated sentences (and copies of the
  original) are dropped, so an example yields at most N_a new rows. The authors' masked-LM
  input also appends the unmasked sentence as a second segment; we give the model the
  masked sentence alone, as Algorithm 1 writes it.
- Candidates are whole words of two or more letters outside the stop-word list (no "##"
  pieces, special tokens, single letters) other than w itself (and, for a multi-piece word,
  its own pieces), so a drawn replacement always changes the word into a content word.
- Words beyond data.max_length word-pieces (which the student never sees) are not replaced.

Output rows {"text", "label"} (the source example's label; none for unlabelled rows): each
original as given, then its augmented copies (lower-cased like the tokenizer's normaliser
for an uncased model). Deterministic: every random draw comes from numpy streams keyed by
(seed, example index), decided before any model runs, so the same seed and inputs give a
byte-identical file. Masked-LM passes run jitted in fixed-shape batches, bucketed by length,
only for words that some augmented sentence actually replaces.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxdistill import data as data_lib
from jaxdistill import distributed
from jaxdistill.core.progress import ProgressBar
from jaxdistill.models.hub import load_pretrained, load_tokenizer

log = logging.getLogger(__name__)

OUTPUT = "train_augmented.jsonl"
META = "augment.json"
LENGTH_BUCKET = 16  # masked copies are padded to a multiple of this (few compiled shapes)
# Function words never replaced (our own list: articles, pronouns, auxiliaries, prepositions,
# conjunctions, negations, contraction stubs such as the "t" of "won ' t").
STOP_WORDS = frozenset("""
a an the this that these those some any each every all both either neither no nor not never
i me my mine myself we us our ours ourselves you your yours yourself yourselves he him his
himself she her hers herself it its itself they them their theirs themselves one ones
who whom whose which what where when why how there here
am is are was were be been being have has had having do does did doing done
will would shall should can could may might must ought
and or but if then than so because as until while although though whether
of at by for with about against between into through during before after above below to
from up down in out on off over under again further once
very too just only also more most other such same own s t d ll m o re ve y don won isn
aren wasn weren hasn haven hadn doesn didn can couldn shouldn wouldn mustn needn ain
""".split())
_WORD = re.compile(r"[a-z]+")


@dataclasses.dataclass(frozen=True)
class Options:
  n: int = 20           # N_a augmented sentences per example
  p: float = 0.4        # p_t: replacement probability per eligible word
  k: int = 15           # K candidates per word
  seed: int = 0
  max_length: int = 64  # word-pieces incl. [CLS]/[SEP] the masked-LM sees
  batch_size: int = 64
  examples: int = 0     # augment only the first N examples (0 = all)

  def check(self) -> None:
    if self.n < 0 or not 0.0 <= self.p <= 1.0 or self.k < 1 or self.batch_size < 1:
      raise ValueError(f"tinybert augmentation needs augment_n >= 0, 0 <= augment_p <= 1, "
                       f"augment_k >= 1 and augment_batch_size >= 1; got {self}")


@dataclasses.dataclass
class Sentence:
  """One sentence split into words, with what augmentation needs of its eligible words."""
  text: str                        # normalised text; augmented copies edit its spans
  ids: list[int]                   # [CLS] word-pieces [SEP], truncated to max_length
  spans: list[tuple[int, int]]     # eligible words' character spans in `text`
  pieces: list[list[int]]          # eligible words' word-piece ids
  positions: list[int]             # eligible words' first piece position in `ids`


def eligible(word: str) -> bool:
  return bool(_WORD.fullmatch(word.lower())) and word.lower() not in STOP_WORDS


def split_sentences(tokenizer, texts: list[str], max_length: int) -> list[Sentence]:
  """Words, word-pieces and eligible words of every text, with the tokenizer's own rules."""
  backend = tokenizer.backend_tokenizer
  norm = [backend.normalizer.normalize_str(t) if backend.normalizer else t for t in texts]
  words = [backend.pre_tokenizer.pre_tokenize_str(t) if backend.pre_tokenizer else
           [(m.group(), m.span()) for m in re.finditer(r"\S+", t)] for t in norm]
  enc = tokenizer([[w for w, _ in ws] or [""] for ws in words], is_split_into_words=True,
                  add_special_tokens=False)
  out = []
  for i, (text, ws) in enumerate(zip(norm, words)):
    ids, word_ids = enc["input_ids"][i], enc.word_ids(i)
    by_word: dict[int, list[int]] = {}
    for pos, w in enumerate(word_ids):
      if w is not None:
        by_word.setdefault(w, []).append(pos)
    room = max_length - 2  # [CLS] and [SEP]
    sent = Sentence(text, [tokenizer.cls_token_id, *ids[:room], tokenizer.sep_token_id], [], [], [])
    for w, (word, span) in enumerate(ws):
      pos = by_word.get(w, [])
      if pos and pos[-1] < room and eligible(word):
        sent.spans.append(span)
        sent.pieces.append([ids[p] for p in pos])
        sent.positions.append(pos[0] + 1)  # after [CLS]
    out.append(sent)
  return out


def draw_plan(num_words: int, opts: Options, index: int) -> tuple[np.ndarray, np.ndarray]:
  """(replace [N_a, words] bool, choice [N_a, words] in 0..K-1) for example `index`."""
  rng = np.random.default_rng([opts.seed, index])
  replace = rng.random((opts.n, num_words)) < opts.p
  choice = rng.integers(0, opts.k, (opts.n, num_words))
  return replace, choice


def whole_word_vocab(tokenizer, vocab_size: int) -> np.ndarray:
  """[V] bool: valid replacements, the vocabulary entries that are whole words of two or more
  letters and not stop words (no "##" pieces, special tokens, single letters, "the")."""
  ok = np.zeros(vocab_size, bool)
  specials = set(tokenizer.all_special_tokens)
  for token, i in tokenizer.get_vocab().items():
    if i < vocab_size and len(token) > 1 and eligible(token) and token not in specials:
      ok[i] = True
  return ok


def make_mlm_top_k(model, allowed: np.ndarray, k: int):
  """Jitted (ids [B,S], mask, mask_pos [B], exclude [B]) -> the K best whole-word ids at mask_pos."""
  graphdef, params = nnx.split(model)
  bias = jnp.where(jnp.asarray(allowed), 0.0, -jnp.inf)

  @jax.jit
  def top_k(params, ids, mask, pos, exclude):
    m = nnx.merge(graphdef, params)
    hidden = m(ids, mask).last_hidden  # no dropout key: deterministic
    h = jnp.take_along_axis(hidden, pos[:, None, None], axis=1)[:, 0]
    logits = m.mlm_logits(h) + bias  # the MLM head at the masked position only
    logits = logits.at[jnp.arange(ids.shape[0]), exclude].set(-jnp.inf)
    return jax.lax.top_k(logits, k)[1]

  return lambda *args: np.asarray(top_k(params, *args))


def make_neighbours(embeddings: np.ndarray, allowed: np.ndarray, k: int):
  """Jitted (vectors [B, H], own pieces [B, P]) -> the K whole words of highest cosine
  similarity, other than the word's own pieces (the "un" of "un ##watch ##able")."""
  unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=-1, keepdims=True), 1e-12)
  unit, bias = jnp.asarray(unit), jnp.where(jnp.asarray(allowed), 0.0, -jnp.inf)

  @jax.jit
  def nearest(vecs, own):
    vecs = vecs / jnp.maximum(jnp.linalg.norm(vecs, axis=-1, keepdims=True), 1e-12)
    sims = (vecs @ unit.T + bias).at[jnp.arange(vecs.shape[0])[:, None], own].set(-jnp.inf)
    return jax.lax.top_k(sims, k)[1]

  return lambda vecs, own: np.asarray(nearest(vecs, own))


def _batches(items: list, size: int):
  for start in range(0, len(items), size):
    yield items[start:start + size]


def candidates(model, tokenizer, sentences: list[Sentence], plans: dict, opts: Options, bar=None):
  """{(example, word): [K] candidate ids} for every word some augmented sentence replaces."""
  cfg = model.config
  allowed = whole_word_vocab(tokenizer, cfg.vocab_size)
  if allowed.sum() < opts.k + 1:
    raise ValueError(f"augment_k={opts.k} but the vocabulary has {allowed.sum()} candidate words; "
                     "lower augment_k")
  needed = [(i, j) for i, (replace, _) in sorted(plans.items()) for j in np.flatnonzero(replace.any(0))]
  mlm = [(i, j) for i, j in needed if len(sentences[i].pieces[j]) == 1]
  multi = [(i, j) for i, j in needed if len(sentences[i].pieces[j]) > 1]
  # Masked copies grouped by padded length: one compiled shape per bucket.
  buckets: dict[int, list] = {}
  for i, j in mlm:
    length = min(math.ceil(len(sentences[i].ids) / LENGTH_BUCKET) * LENGTH_BUCKET, opts.max_length)
    buckets.setdefault(length, []).append((i, j))
  words = sorted({tuple(sentences[i].pieces[j]) for i, j in multi})
  total = sum(math.ceil(len(v) / opts.batch_size) for v in buckets.values()) + \
      math.ceil(len(words) / opts.batch_size)
  if bar is not None:
    bar.start(total, f"{len(mlm)} masked-LM passes, {len(words)} multi-piece words")
  out, done = {}, 0
  top_k = make_mlm_top_k(model, allowed, opts.k)
  for length in sorted(buckets):
    for chunk in _batches(buckets[length], opts.batch_size):
      ids = np.zeros((opts.batch_size, length), np.int32)
      mask = np.zeros_like(ids)
      pos, exclude = np.zeros(opts.batch_size, np.int32), np.zeros(opts.batch_size, np.int32)
      for r, (i, j) in enumerate(chunk):
        s = sentences[i]
        ids[r, :len(s.ids)], mask[r, :len(s.ids)] = s.ids, 1
        pos[r], exclude[r] = s.positions[j], s.ids[s.positions[j]]
        ids[r, pos[r]] = tokenizer.mask_token_id
      for r, best in enumerate(top_k(ids, mask, pos, exclude)[:len(chunk)]):
        out[chunk[r]] = best
      done += 1
      if bar is not None:
        bar.update(done)
  table = np.asarray(model.embeddings.word.embedding[...], np.float32)
  nearest, by_word = make_neighbours(table, allowed, opts.k), {}
  width = LENGTH_BUCKET * math.ceil(max([len(w) for w in words], default=1) / LENGTH_BUCKET)
  for chunk in _batches(words, opts.batch_size):
    vecs = np.zeros((opts.batch_size, table.shape[1]), np.float32)
    own = np.full((opts.batch_size, width), tokenizer.pad_token_id, np.int32)  # not a word
    for r, w in enumerate(chunk):
      vecs[r], own[r, :len(w)] = table[list(w)].mean(0), w
    by_word.update(zip(chunk, nearest(vecs, own)[:len(chunk)]))
    done += 1
    if bar is not None:
      bar.update(done)
  for i, j in multi:
    out[(i, j)] = by_word[tuple(sentences[i].pieces[j])]
  return out


def augment_sentences(model, tokenizer, texts: list[str], opts: Options, bar=None) -> list[list[str]]:
  """For each text: [the text, its unique augmented copies...] (at most 1 + N_a)."""
  opts.check()
  sentences = split_sentences(tokenizer, texts, opts.max_length)
  todo = range(len(texts)) if opts.examples <= 0 else range(min(opts.examples, len(texts)))
  plans = {i: draw_plan(len(sentences[i].spans), opts, i) for i in todo}
  cands = candidates(model, tokenizer, sentences, plans, opts, bar)
  vocab = tokenizer.convert_ids_to_tokens
  out = []
  for i, text in enumerate(texts):
    rows, seen = [text], {text, sentences[i].text}
    for replace, choice in ([plans[i]] if i in plans else []):
      for a in range(replace.shape[0]):
        new = sentences[i].text
        for j in reversed(range(replace.shape[1])):  # right to left: spans stay valid
          if replace[a, j]:
            start, end = sentences[i].spans[j]
            new = new[:start] + vocab(int(cands[(i, j)][choice[a, j]])) + new[end:]
        if new not in seen:
          seen.add(new)
          rows.append(new)
    out.append(rows)
  return out


class _Progress:
  """The trainer's rich progress bar, created once the number of batches is known."""

  def __init__(self, description: str, active: bool):
    self.description, self.active, self.bar = description, active, None

  def start(self, total: int, info: str) -> None:
    self.bar = ProgressBar(self.description, max(total, 1), 0, active=self.active)
    self.info = info
    self.bar.update(0, info)

  def update(self, done: int) -> None:
    self.bar.update(done, self.info)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def _label_value(label, raw) -> object:
  if raw.is_regression:
    return None if np.isnan(label) else float(label)
  if label < 0:
    return None
  return raw.label_names[int(label)] if raw.label_names else int(label)


def options_of(config) -> Options:
  tb = config.tinybert
  return Options(n=tb.augment_n, p=tb.augment_p, k=tb.augment_k, seed=tb.augment_seed,
                 max_length=config.data.max_length, batch_size=tb.augment_batch_size,
                 examples=tb.augment_examples)


def run_augment_stage(config, workdir: Path) -> Path:
  """Writes workdir/train_augmented.jsonl from the task's train split (skipped when it exists
  for the same settings); returns its path."""

  out, meta_path = workdir / OUTPUT, workdir / META
  opts = options_of(config)
  source = config.tinybert.augment_model
  meta = {"options": dataclasses.asdict(opts), "augment_model": str(source),
          "data": config.data.to_dict()}
  if out.exists():  # written by a rename, so it exists only complete
    old = json.loads(meta_path.read_text()) if meta_path.exists() else None
    if old is not None and old != json.loads(json.dumps(meta)):
      raise ValueError(f"{out} was made with other settings ({meta_path}); delete it or use a new workdir")
    log.info("augmented data %s exists; skipped", out)
    return out
  if not source:
    raise ValueError("tinybert_augment needs tinybert.augment_model: a checkpoint with a masked-LM "
                     "head (e.g. '@stage:mlm_head')")
  if distributed.is_main():
    raw = data_lib.load_raw_task(config.data)
    if len(raw.text_columns) != 1:
      raise ValueError(f"tinybert_augment handles single-text tasks; {raw.name!r} has text pairs "
                       f"{raw.text_columns}")
    train = raw.splits["train"]
    model, fresh = load_pretrained(source, mlm_head=True, dtype=config.train.dtype)
    if any(f.startswith("mlm_") for f in fresh):
      raise ValueError(f"tinybert.augment_model {source!r} has no masked-LM head; fit one first "
                       "(configs/tinybert.py's mlm_head stage) or use a BertForMaskedLM checkpoint")
    bar = _Progress(f"{config.name} augment", active=True)
    try:
      rows = augment_sentences(model, load_tokenizer(source), list(train.texts), opts, bar)
    finally:
      bar.close()
    workdir.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps(meta, indent=2))
    tmp = out.with_suffix(".jsonl.tmp")
    with tmp.open("w") as f:
      for texts, label in zip(rows, train.labels):
        value = _label_value(label, raw)
        for text in texts:
          f.write(json.dumps({"text": text} if value is None else {"text": text, "label": value}) + "\n")
    os.replace(tmp, out)
    n_new = sum(len(r) - 1 for r in rows)
    log.info("wrote %s: %d originals + %d augmented rows", out, len(rows), n_new)
  distributed.sync(f"augment {workdir}")
  return out
