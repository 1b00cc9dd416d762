"""SQuAD v1.1 exact match and F1, as the official evaluate-v1.1.py script defines them.

Both compare normalised strings: lower-cased, ASCII punctuation (string.punctuation)
deleted, the articles a/an/the removed as whole words, whitespace collapsed. EM is
1 when the normalised prediction equals a normalised gold answer; F1 is the harmonic
mean of precision and recall over the bags of whitespace tokens. Each question scores
its best gold answer (max over ground truths), and the reported numbers are percentages
averaged over all questions of the reference set; a question without a prediction
scores 0 on both (the official script does the same after printing a warning).

Written from the definition, so a change here must keep the hand-computed cases of
tests/test_squad_data.py passing.
"""

from __future__ import annotations

import collections
import logging
import re
import string
from collections.abc import Iterable, Mapping

logger = logging.getLogger(__name__)

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(text: str) -> str:
  """Lower case, drop punctuation, drop articles, collapse whitespace (in the official order)."""
  text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
  text = _ARTICLES.sub(" ", text)
  return " ".join(text.split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
  return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
  pred_tokens = normalize_answer(prediction).split()
  gold_tokens = normalize_answer(ground_truth).split()
  # Bag intersection: a token counts as often as it occurs in both.
  same = sum((collections.Counter(pred_tokens) & collections.Counter(gold_tokens)).values())
  if same == 0:  # also covers an empty prediction or gold after normalisation
    return 0.0
  precision = same / len(pred_tokens)
  recall = same / len(gold_tokens)
  return 2 * precision * recall / (precision + recall)


def max_over_ground_truths(metric, prediction: str, ground_truths: Iterable[str]) -> float:
  return max(metric(prediction, gold) for gold in ground_truths)


def _references(references) -> dict[str, list[str]]:
  """id -> gold answers, from a mapping or from objects with .id and .answers (QAExample)."""
  if isinstance(references, Mapping):
    return {k: list(v) for k, v in references.items()}
  return {r.id: list(r.answers) for r in references}


def squad_evaluate(references, predictions: Mapping[str, str]) -> dict[str, float]:
  """{"exact_match", "f1"} in percent over every reference question.

  references: QAExamples (or a mapping id -> gold answer texts); predictions: id -> text.
  Predictions for ids outside the references are ignored, as in the official script.
  """
  golds = _references(references)
  if not golds:
    raise ValueError("squad_evaluate needs at least one reference question")
  em = f1 = 0.0
  missing = 0
  for qid, answers in golds.items():
    if not answers:
      raise ValueError(f"question {qid!r} has no gold answers; SQuAD v1.1 scoring needs at least one")
    if qid not in predictions:
      missing += 1
      continue
    em += max_over_ground_truths(exact_match_score, predictions[qid], answers)
    f1 += max_over_ground_truths(f1_score, predictions[qid], answers)
  if missing:
    logger.warning("%d of %d questions have no prediction and score 0", missing, len(golds))
  return {"exact_match": 100.0 * em / len(golds), "f1": 100.0 * f1 / len(golds)}
