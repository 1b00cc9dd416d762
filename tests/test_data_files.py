"""task="files": local csv/tsv/json/jsonl/parquet files, explicit or inferred label names,
and the one-line DataError for every user-fixable problem."""

import csv
import json
import logging

import datasets
import numpy as np
import pytest

from jaxdistill.data import DataError, default_data_config, load_raw_task, make_source, texts

ROWS = [("a fine film", "pos"), ("dull, \"long\" and loud", "neg"), ("ok, I guess", "neutral"), ("ünïcødé 🎬", "pos")]


def write_csv(path, rows, header=("text", "label"), delimiter=","):
  with open(path, "w", encoding="utf-8", newline="") as f:
    w = csv.writer(f, delimiter=delimiter)
    w.writerow(header)
    w.writerows(rows)
  return str(path)


def write_jsonl(path, records):
  with open(path, "w", encoding="utf-8") as f:
    f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
  return str(path)


def files_cfg(**kw):
  cfg = default_data_config()
  cfg.task = "files"
  for k, v in kw.items():
    cfg[k] = v
  return cfg


@pytest.mark.parametrize("ext", ["csv", "tsv", "jsonl", "json", "parquet"])
def test_every_format_maps_string_labels_by_name(tmp_path, ext):
  path = tmp_path / f"train.{ext}"
  if ext in ("csv", "tsv"):
    write_csv(path, ROWS, delimiter="\t" if ext == "tsv" else ",")
  elif ext == "jsonl":
    write_jsonl(path, [{"text": t, "label": l} for t, l in ROWS])
  elif ext == "json":
    path.write_text(json.dumps([{"text": t, "label": l} for t, l in ROWS]), encoding="utf-8")
  else:
    datasets.Dataset.from_dict({"text": [t for t, _ in ROWS], "label": [l for _, l in ROWS]}).to_parquet(str(path))
  raw = load_raw_task(files_cfg(train_file=str(path), label_names=["neg", "neutral", "pos"]))
  split = raw.splits["train"]
  assert split.texts == [t for t, _ in ROWS]
  assert split.labels.tolist() == [2, 0, 1, 2] and split.labels.dtype == np.int32
  assert raw.label_names == ["neg", "neutral", "pos"]


def test_inferred_label_names_are_sorted_and_logged(tmp_path, caplog):
  train = write_csv(tmp_path / "train.csv", ROWS)
  dev = write_csv(tmp_path / "dev.csv", [("meh", "neutral")])
  with caplog.at_level(logging.INFO, logger="jaxdistill.data"):
    raw = load_raw_task(files_cfg(train_file=train, dev_file=dev))
  assert raw.label_names == ["neg", "neutral", "pos"]
  assert "['neg', 'neutral', 'pos']" in caplog.text
  assert raw.splits["dev"].labels.tolist() == [1]


def test_inferred_numeric_labels_sort_numerically(tmp_path):
  rows = [(f"t{i}", str(v)) for i, v in enumerate([10, 2, 9, 2])]
  raw = load_raw_task(files_cfg(train_file=write_csv(tmp_path / "t.csv", rows)))
  assert raw.label_names == ["2", "9", "10"]
  assert raw.splits["train"].labels.tolist() == [2, 0, 1, 0]


def test_integer_labels_are_ids_when_names_do_not_match(tmp_path):
  path = write_jsonl(tmp_path / "t.jsonl", [{"text": "x", "label": 1}, {"text": "y", "label": 0}, {"text": "z", "label": "pos"}])
  raw = load_raw_task(files_cfg(train_file=path, label_names=["neg", "pos"]))
  assert raw.splits["train"].labels.tolist() == [1, 0, 1]


def test_digit_label_names_map_by_name_not_position(tmp_path):
  """Names ["1", "0"]: the label "1" is name 0; taking it as id 1 would silently flip."""
  path = write_csv(tmp_path / "t.csv", [("x", "1"), ("y", "0")])
  raw = load_raw_task(files_cfg(train_file=path, label_names=["1", "0"]))
  assert raw.splits["train"].labels.tolist() == [0, 1]


def test_pairs_regression_and_unlabelled_test(tmp_path):
  header = ("q", "a", "score")
  train = write_csv(tmp_path / "train.csv", [("q1", "a1", "0.5"), ("q2", "", "4")], header=header)
  test = write_csv(tmp_path / "test.csv", [("q3", "a3")], header=("q", "a"))
  raw = load_raw_task(files_cfg(train_file=train, test_file=test, text_column="q", text_pair_column="a",
                                label_column="score", is_regression=True))
  assert raw.text_columns == ("q", "a") and raw.label_names is None and raw.is_regression
  assert raw.splits["train"].labels.tolist() == [0.5, 4.0] and raw.splits["train"].labels.dtype == np.float32
  assert raw.splits["train"].text_pairs == ["a1", ""]
  assert not raw.splits["test"].has_labels and np.isnan(raw.splits["test"].labels).all()
  assert texts(raw, "test", segment=1) == ["a3"]


def test_classlabel_in_parquet_supplies_names_and_guards_the_order(tmp_path):
  features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["neg", "pos"])})
  path = str(tmp_path / "t.parquet")
  datasets.Dataset.from_dict({"text": ["x", "y"], "label": [1, 0]}, features=features).to_parquet(path)
  assert load_raw_task(files_cfg(train_file=path)).label_names == ["neg", "pos"]
  with pytest.raises(DataError, match=r"stores label names \['neg', 'pos'\] but config.data.label_names"):
    load_raw_task(files_cfg(train_file=path, label_names=["pos", "neg"]))


def test_max_examples_keeps_the_first_rows(tmp_path):
  raw = load_raw_task(files_cfg(train_file=write_csv(tmp_path / "t.csv", ROWS), max_examples=2))
  assert raw.splits["train"].texts == [ROWS[0][0], ROWS[1][0]]


@pytest.mark.parametrize("ext", ["csv", "jsonl"])
def test_na_like_and_numeric_texts_stay_verbatim(tmp_path, ext):
  rows = [("NA", "pos"), ("null", "neg"), ("007", "pos"), ("nan", "neg"), ("", "pos"), ("  ", "neg")]
  if ext == "csv":
    path = write_csv(tmp_path / "t.csv", rows)
  else:
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": t, "label": l} for t, l in rows])
  assert texts(files_cfg(train_file=path), "train") == [t for t, _ in rows]


def test_csv_with_byte_order_mark(tmp_path):
  path = tmp_path / "t.csv"
  path.write_text("text,label\nx,pos\n", encoding="utf-8-sig")
  assert load_raw_task(files_cfg(train_file=str(path))).splits["train"].texts == ["x"]


def test_texts_accepts_a_config(tmp_path):
  cfg = files_cfg(train_file=write_csv(tmp_path / "t.csv", ROWS))
  assert texts(cfg, "train") == [t for t, _ in ROWS]


# --------------------------------------------------------------------------- errors


def expect_error(cfg, *fragments):
  with pytest.raises(DataError) as info:
    load_raw_task(cfg)
  message = str(info.value)
  assert "\n" not in message
  for fragment in fragments:
    assert fragment in message, message
  return message


def test_error_missing_file(tmp_path):
  expect_error(files_cfg(train_file=str(tmp_path / "nope.csv")), "nope.csv", "does not exist", "fix the path")


def test_error_unsupported_extension(tmp_path):
  path = tmp_path / "t.xlsx"
  path.write_text("x")
  expect_error(files_cfg(train_file=str(path)), "unsupported extension '.xlsx'", ".parquet")


def test_error_missing_text_column_lists_available(tmp_path):
  path = write_csv(tmp_path / "t.csv", ROWS, header=("sentence", "label"))
  expect_error(files_cfg(train_file=path), "no column 'text'", "['sentence', 'label']", "config.data.text_column")


def test_error_missing_label_column_lists_available(tmp_path):
  path = write_csv(tmp_path / "t.csv", ROWS, header=("text", "y"))
  expect_error(files_cfg(train_file=path, label_names=["neg", "pos"]), "no label column 'label'", "['text', 'y']")


@pytest.mark.parametrize("content", ["", "text,label\n"])
def test_error_empty_dataset(tmp_path, content):
  path = tmp_path / "t.csv"
  path.write_text(content)
  expect_error(files_cfg(train_file=str(path), label_names=["a"]), "t.csv")


def test_error_unknown_label_names_label_and_allowed(tmp_path):
  path = write_csv(tmp_path / "t.csv", [("x", "pos"), ("y", "meh")])
  expect_error(files_cfg(train_file=path, label_names=["neg", "pos"]), "row 1", "'meh'", "['neg', 'pos']")


def test_error_label_unseen_in_train(tmp_path):
  train = write_csv(tmp_path / "train.csv", [("x", "pos"), ("y", "neg")])
  dev = write_csv(tmp_path / "dev.csv", [("z", "other")])
  expect_error(files_cfg(train_file=train, dev_file=dev), "dev file", "'other'", "['neg', 'pos']")


def test_error_missing_label_names_the_row(tmp_path):
  path = write_csv(tmp_path / "t.csv", [("x", "pos"), ("y", "neg"), ("z", "")])
  expect_error(files_cfg(train_file=path), "row 2", "has no label")


def test_error_unknown_task_lists_valid_ones():
  message = expect_error({"task": "imdb"}, "unknown config.data.task 'imdb'", "rotten_tomatoes", "glue/sst2", "files")
  assert "glue/mnli" in message


def test_error_no_files_configured():
  expect_error(files_cfg(), "train_file")


@pytest.mark.parametrize("key,value,fragment", [
    ("max_length", 2, "max_length=2 is too small"),
    ("max_length", "64", "must be an int"),
    ("max_examples", -1, "negative"),
    ("label_names", ["a", "a"], "duplicates"),
    ("is_regression", 1, "must be a bool"),
])
def test_error_bad_config_values(tmp_path, key, value, fragment):
  cfg = {"task": "files", "train_file": write_csv(tmp_path / "t.csv", ROWS), key: value}
  with pytest.raises(DataError, match=fragment):
    make_source(cfg)


def test_label_options_are_rejected_for_builtin_tasks():
  with pytest.raises(DataError, match="only apply to task='files'"):
    make_source({"task": "glue/sst2", "path": "x", "label_names": ["positive", "negative"]})


def test_regression_with_label_names_is_rejected():
  with pytest.raises(DataError, match="conflicts with label_names"):
    make_source({"task": "files", "train_file": "x.csv", "is_regression": True, "label_names": ["a"]})


def test_error_regression_non_numeric_label(tmp_path):
  path = write_csv(tmp_path / "t.csv", [("x", "1.5"), ("y", "high")])
  expect_error(files_cfg(train_file=path, is_regression=True), "row 1", "'high'", "not a finite number")


def test_error_malformed_csv_is_one_line(tmp_path):
  path = tmp_path / "t.csv"
  path.write_text("text,label\nx,pos\ny,neg,extra,fields\n")
  expect_error(files_cfg(train_file=str(path)), "could not parse", "t.csv")
