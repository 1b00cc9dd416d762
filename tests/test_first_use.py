"""First-use friction (issue 18): mistakes a new user makes fail at once, in one line, naming
the fix; files a run writes are readable like the others."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxdistill import config_lib
from jaxdistill.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def _cli(*args) -> tuple[int, str, float]:
  t = time.time()
  p = subprocess.run([sys.executable, "-m", "jaxdistill.train", *args], capture_output=True,
                     text=True, cwd=REPO)
  return p.returncode, (p.stderr + p.stdout).strip(), time.time() - t


def test_a_misspelled_variant_lists_the_variants():
  with pytest.raises(ConfigError, match=r"no variant 'tinny'; its variants: 'tiny'"):
    config_lib.load_config(str(REPO / "configs/kd.py:tinny"))
  assert config_lib.config_variants(REPO / "configs/theseus.py") == ["tiny"]


@pytest.mark.parametrize("typed, suggested", [("optim.learning_rate", "optim.lr"),
                                              ("train.batch", "train.batch_size"),
                                              ("kd.T", "kd.temperature")])
def test_suggestions_know_the_common_aliases(typed, suggested):
  c = config_lib.load_config(str(REPO / "configs/kd.py"))
  with pytest.raises(ConfigError) as e:
    config_lib.apply_override(c, typed, "1")
  assert f"did you mean {suggested}" in str(e.value)


def test_a_bad_data_task_is_a_config_error_before_any_work(tmp_path):
  rc, out, seconds = _cli("--config", "configs/kd.py", "--workdir", str(tmp_path / "w"),
                          "--config.data.task=rotten")
  assert rc == 2 and "unknown config.data.task 'rotten'" in out and "rotten_tomatoes" in out
  assert len(out.splitlines()) == 1
  assert not (tmp_path / "w").exists()  # nothing started, nothing written
  # checked before JAX is imported: well under the seconds an import of JAX takes
  assert seconds < 5, seconds


def test_help_lists_the_configs_and_where_keys_are_documented():
  rc, out, _ = _cli("--help")
  assert rc == 0
  for name in ("configs/kd.py", "configs/theseus.py", "configs/multi_teacher_kd.py"):
    assert name in out
  assert "config_lib.py" in out and ":tiny" in out


def _mode(p: Path) -> int:
  return stat.S_IMODE(os.stat(p).st_mode)


def test_exports_and_reports_are_written_like_the_other_files(tmp_path):
  from jaxdistill import report as R
  from jaxdistill.testing import tiny_checkpoint
  out = tiny_checkpoint(tmp_path / "export")
  assert _mode(out / "model.safetensors") == 0o644  # safetensors itself writes 0600
  r = R.CompressionReport.build(name="r", method="kd", task="t", metric="accuracy",
                                teacher_metrics={"test": {"accuracy": 0.8}},
                                student_metrics={"test": {"accuracy": 0.7}},
                                teacher_params=10, student_params=5)
  md, js = R.write_report(r, tmp_path / "run")
  assert _mode(md) == _mode(js) == 0o644



def test_rerunning_a_finished_run_prints_its_report_and_touches_nothing(tmp_path):
  wd = tmp_path / "kd"
  rc, out, _ = _cli("--config", "configs/kd.py:tiny", "--workdir", str(wd))
  assert rc == 0, out
  files = {p: p.stat().st_mtime_ns for p in wd.rglob("*") if p.is_file()}
  rc, out, seconds = _cli("--config", "configs/kd.py:tiny", "--workdir", str(wd))
  assert rc == 0 and "holds this run, finished" in out and "Compression report" in out, out
  assert seconds < 10, f"a finished run took {seconds:.1f} s to report"
  assert {p: p.stat().st_mtime_ns for p in wd.rglob("*") if p.is_file()} == files
  # Another config in the same workdir: refused, naming what differs; nothing written.
  rc, out, _ = _cli("--config", "configs/kd.py:tiny", "--workdir", str(wd), "--config.optim.lr=0.5")
  assert rc == 2 and "another config (optim.lr: " in out and "new --workdir" in out, out
  assert {p: p.stat().st_mtime_ns for p in wd.rglob("*") if p.is_file()} == files


def test_keys_added_to_the_library_since_a_run_do_not_make_it_another_config(tmp_path):
  import json
  from jaxdistill import run_dir
  c = config_lib.load_config(str(REPO / "configs/kd.py:tiny"))
  run_dir.write_run_config(c, tmp_path)
  (tmp_path / "export").mkdir()
  (tmp_path / "export" / "DONE").write_text(json.dumps({"student": {"test": {"accuracy": 0.5}}}))
  stored = json.loads((tmp_path / "run_config.json").read_text())
  del stored["data"]["doc_stride"]  # as written by an older jaxdistill
  (tmp_path / "run_config.json").write_text(json.dumps(stored))
  assert "finished" in run_dir.finished_report(c, tmp_path)
  with c.unlocked():
    c.optim.lr = 0.5
  with pytest.raises(ConfigError, match=r"optim.lr: 0.0001 -> 0.5"):
    run_dir.finished_report(c, tmp_path)
