"""Bad input through the command line (`python -m jaxdistill.train`'s main, in process): each
mistake ends the run with a non-zero exit and one line on stderr that says what is wrong and
what to change; never a traceback, never a silently wrong run.

Other places that check the same families in more detail: tests/test_configs.py (config
keys and values), tests/test_data_files.py (every file/label error of the loaders),
tests/test_hf_errors.py (checkpoint directories), tests/test_train_e2e.py (a teacher without
a trained classifier, student.layers out of range)."""

import json
import shutil

import pytest

from jaxdistill.testing import tiny_checkpoint
from jaxdistill.train.__main__ import main


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
  d = tmp_path_factory.mktemp("ckpts")
  out = {"teacher": tiny_checkpoint(d / "teacher", num_layers=2, label_names=("rotten", "fresh"), seed=1),
         "student": tiny_checkpoint(d / "student", num_layers=1, seed=2),
         "two_heads": tiny_checkpoint(d / "two_heads", num_layers=1, num_heads=2, seed=3),
         "wide": tiny_checkpoint(d / "wide", num_layers=1, hidden_size=48, num_heads=4, seed=4)}
  # Same vocabulary, other normaliser: a cased copy of the (uncased) MiniLM tokenizer.
  cased = d / "cased"
  shutil.copytree(out["student"], cased)
  tok = json.loads((cased / "tokenizer.json").read_text())
  tok["normalizer"]["lowercase"] = False
  (cased / "tokenizer.json").write_text(json.dumps(tok))
  cfg = json.loads((cased / "tokenizer_config.json").read_text())
  cfg["do_lower_case"] = False
  (cased / "tokenizer_config.json").write_text(json.dumps(cfg))
  # Same size and normaliser, two tokens swapped: ids differ for the words that use them.
  swapped = d / "swapped"
  shutil.copytree(out["student"], swapped)
  tok = json.loads((swapped / "tokenizer.json").read_text())
  vocab = tok["model"]["vocab"]
  vocab["good"], vocab["bad"] = vocab["bad"], vocab["good"]
  (swapped / "tokenizer.json").write_text(json.dumps(tok))
  (swapped / "vocab.txt").unlink()  # the fast tokenizer reads tokenizer.json
  out.update(cased=cased, swapped=swapped)
  return {k: str(v) for k, v in out.items()}


@pytest.fixture
def cli(ckpts, tmp_path, capsys):
  """Runs the CLI on tiny KD with `extra` overrides; returns (exit code, the stderr line)."""

  def run(*extra, student="student", teacher="teacher"):
    args = ["--config", "configs/kd.py:tiny", "--workdir", str(tmp_path / "run"),
            f"--config.cache_dir={tmp_path / 'cache'}", "--config.teacher.finetune=false",
            f"--config.teacher.source={ckpts[teacher]}", f"--config.student.source={ckpts[student]}",
            "--config.student.init=pretrained", "--config.student.layers=",
            "--config.report.export=false", "--config.report.compression=false", *extra]
    code = main(args)
    err = capsys.readouterr().err.strip()
    assert code != 0, "the run should have failed"
    assert "Traceback" not in err
    last = err.splitlines()[-1]
    assert last.startswith("error: "), err[-2000:]
    return code, last

  return run


def files(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return ["--config.data.task=files", f"--config.data.train_file={path}", f"--config.data.dev_file={path}"]


GOOD = "text,label\n" + "".join(f"a {'good' if i % 2 else 'bad'} film number {i},{'fresh' if i % 2 else 'rotten'}\n"
                                for i in range(16))


def test_unknown_config_key(cli):
  code, err = cli("--config.train.epoch=3")
  assert code == 2 and "unknown config key 'train.epoch'" in err and "did you mean train.epochs" in err


def test_missing_data_file(cli, tmp_path):
  _, err = cli("--config.data.task=files", f"--config.data.train_file={tmp_path / 'nope.csv'}")
  assert "nope.csv' does not exist; fix the path" in err


def test_missing_text_column(cli, tmp_path):
  _, err = cli(*files(tmp_path, "d.csv", GOOD.replace("text,label", "review,label", 1)))
  assert "has no column 'text'" in err and "['review', 'label']" in err and "config.data.text_column" in err


def test_missing_label_column(cli, tmp_path):
  _, err = cli(*files(tmp_path, "d.csv", GOOD.replace("text,label", "text,sentiment", 1)))
  assert "label column 'label'" in err and "config.data.label_column" in err


@pytest.mark.parametrize("content, expected", [
    ("", "is empty; it needs a header row and at least one data row"),
    ("text,label\n", "has no data rows; add data rows"),
    ("text,label\nok,fresh\nbad,rotten\n", "fewer than batch_size=8"),
])
def test_empty_or_too_small_dataset(cli, tmp_path, content, expected):
  _, err = cli(*files(tmp_path, "d.csv", content))
  assert expected in err
  if "batch_size" in expected:
    assert "--config.train.batch_size" in err


def test_label_outside_the_declared_classes(cli, tmp_path):
  _, err = cli(*files(tmp_path, "d.csv", GOOD + "a so-so film,meh\n"), "--config.data.label_names=rotten,fresh")
  assert "label 'meh', not among the label names ['rotten', 'fresh']" in err
  assert "config.data.label_names" in err


def test_label_outside_the_teachers_classes(cli, tmp_path):
  _, err = cli(*files(tmp_path, "d.csv", GOOD + "a so-so film,meh\n"))  # 3 classes, 2-class teacher
  assert "2 outputs but the task 'files' needs 3 classes" in err and "fine-tune the teacher" in err


def test_sequence_length_above_max_positions(cli):
  _, err = cli("--config.data.max_length=256")  # the tiny checkpoints have 128 positions
  assert "data.max_length=256 exceeds the student's position table (128 tokens" in err
  assert "--config.data.max_length to at most 128" in err


def test_layer_map_out_of_range(cli):
  _, err = cli("--config.losses.pkd=1", "--config.pkd.layer_map=explicit", "--config.pkd.pairs=((3, 2),)")
  assert "student layer 3 is out of range 0..1" in err  # a 1-layer student


def test_minilm_v1_needs_equal_head_counts(cli):
  _, err = cli("--config.losses.kd=0", "--config.losses.minilm_attention=1", student="two_heads")
  assert "MiniLM v1 needs equal head counts (teacher 4 vs student 2)" in err and "minilm_v2" in err


def test_widths_without_a_projection(cli):
  # MobileBERT's feature-map transfer has no projection; TinyBERT/PKD/LAD add one themselves.
  _, err = cli("--config.losses.kd=0", "--config.losses.mobilebert_feature_map=1",
               "--config.student.arch=mobilebert", "--config.mobilebert.hidden_size=48",
               "--config.mobilebert.copy_embeddings=false", "--config.mobilebert.copy_head=false",
               "--config.mobilebert.intra_size=16", "--config.mobilebert.intermediate_size=32")
  assert "compares widths one to one" in err and "mobilebert.hidden_size=0" in err


@pytest.mark.parametrize("student, expected", [
    ("cased", "they split 'Hello, WORLD!"), ("swapped", "2 tokens have other ids or are missing (e.g. 'bad')")])
def test_teacher_and_student_tokenizers_differ(cli, student, expected):
  _, err = cli(student=student)
  assert "the student's tokenizer" in err and expected in err and "give the student the teacher's tokenizer" in err
