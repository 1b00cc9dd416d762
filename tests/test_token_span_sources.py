"""SQuAD and NER from a user's own files and from Hugging Face `datasets` rows (the online
layout, here as the plain dicts `datasets` yields)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from jaxdistill import data as data_lib
from jaxdistill.data import token_span_tasks as T
from jaxdistill.data.errors import DataError

CONTEXT = "The Eiffel Tower is in Paris. It was finished in 1889."


def _squad_file(path, qid_prefix):
  qas = [{"id": f"{qid_prefix}1", "question": "Where is the Eiffel Tower?",
          "answers": [{"text": "Paris", "answer_start": CONTEXT.index("Paris")}]},
         {"id": f"{qid_prefix}2", "question": "When was it finished?",
          "answers": [{"text": "1889", "answer_start": CONTEXT.index("1889")}]}]
  path.write_text(json.dumps({"version": "1.1", "data": [
      {"title": "t", "paragraphs": [{"context": CONTEXT, "qas": qas}]}]}))
  return str(path)


def test_squad_from_the_users_files(tmp_path, minilm_dir):
  from transformers import AutoTokenizer
  tok = AutoTokenizer.from_pretrained(str(minilm_dir))
  cfg = data_lib.default_data_config()
  cfg.task, cfg.max_length, cfg.doc_stride = "squad", 96, 16
  cfg.train_file, cfg.dev_file, cfg.test_file = (_squad_file(tmp_path / f"{s}.json", s) for s in ("a", "b", "c"))
  task = data_lib.load_task(cfg, tok)
  assert task.kind == "span" and set(task.splits) == {"train", "dev", "test"}
  s, f = task.splits["test"], task.meta["test"].features
  for row in range(len(s)):  # the labels decode back to the answers
    a, b = s.labels[row]
    ex = task.meta["test"].examples[f.example_index[row]]
    assert ex.context[f.offsets[row, a, 0]:f.offsets[row, b, 1]] == ex.answers[0]
  # One-hot logits at the gold positions score F1 1 through the evaluation path.
  logits = np.full(s.labels.shape[:1] + (s.max_length, 2), -10.0)
  logits[np.arange(len(s)), s.labels[:, 0], 0] = logits[np.arange(len(s)), s.labels[:, 1], 1] = 10.0
  assert T.span_metrics(logits, task.meta["test"]) == {"f1": 1.0, "exact_match": 1.0}


def test_squad_and_ner_from_hf_rows():
  rows = [{"id": "q", "title": "t", "context": CONTEXT, "question": "Where?",
           "answers": {"text": ["Paris"], "answer_start": [CONTEXT.index("Paris")]}}]
  (ex,) = T.squad_from_hf(rows)
  assert (ex.id, ex.answers, ex.answer_starts) == ("q", ["Paris"], [23])
  rows[0]["answers"]["answer_start"] = [3]
  with pytest.raises(DataError, match="not at answer_start=3"):
    T.squad_from_hf(rows)
  names = ["O", "B-PER", "I-PER", "B-LOC"]
  sents = T.ner_from_hf([{"tokens": ["Ada", "Lovelace", "in", "London"], "ner_tags": [1, 2, 0, 3]}], names)
  assert sents == [(["Ada", "Lovelace", "in", "London"], ["B-PER", "I-PER", "O", "B-LOC"])]
  with pytest.raises(DataError, match="2 tokens but 1 ner_tags"):
    T.ner_from_hf([{"tokens": ["a", "b"], "ner_tags": [0]}], names)


def test_bad_sources_are_one_line_errors(tmp_path):
  cfg = data_lib.default_data_config()
  cfg.task, cfg.max_length = "squad", 256
  cfg.train_file = str(tmp_path / "missing.json")
  with pytest.raises(DataError, match="does not exist"):
    data_lib.make_source(cfg)
  cfg.train_file, cfg.path = "", "/some/dir"
  with pytest.raises(DataError, match="use 'hf:<dataset>'"):
    data_lib.make_source(cfg)
