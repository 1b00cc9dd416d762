"""Weights & Biases logging (the `wandb` extra), in its offline mode: the metrics the writer
logs are in the run file, read back record by record."""

from __future__ import annotations

import json
import sys

import pytest

from jaxdistill.train.logs import MetricWriter
from wandb_reader import history, run_config


@pytest.fixture
def offline(tmp_path, monkeypatch):
  for var, sub in (("WANDB_DIR", "wandb_dir"), ("WANDB_CACHE_DIR", "cache"),
                   ("WANDB_CONFIG_DIR", "config"), ("WANDB_DATA_DIR", "data")):
    monkeypatch.setenv(var, str(tmp_path / sub))
  monkeypatch.setenv("WANDB_MODE", "offline")
  monkeypatch.setenv("WANDB_SILENT", "true")
  monkeypatch.setenv("WANDB_DISABLE_GIT", "true")
  return tmp_path


def test_metrics_reach_the_offline_run(offline):
  pytest.importorskip("wandb")
  work = offline / "run"
  w = MetricWriter(work, wandb={"project": "jaxdistill-test", "mode": "offline", "name": "t",
                                "config": {"optim": {"lr": 1e-4}}})
  w.write(1, {"train/loss": 0.5, "note": "text is not a scalar"})
  w.write(2, {"train/loss": 0.25, "dev/accuracy": 0.75})
  w.close()
  rows = history(work)
  assert [(r["_step"], r["train/loss"]) for r in rows] == [(1, 0.5), (2, 0.25)]
  assert rows[1]["dev/accuracy"] == 0.75 and "note" not in rows[0]
  cfg = json.loads(run_config(work)["optim"])
  assert cfg.get("value", cfg) == {"lr": 1e-4}
  # metrics.jsonl keeps every line, W&B or not
  assert len((work / "metrics.jsonl").read_text().splitlines()) == 2


def test_without_wandb_settings_nothing_of_wandb_is_written(tmp_path):
  w = MetricWriter(tmp_path, wandb=None)
  w.write(1, {"train/loss": 1.0})
  w.close()
  assert not (tmp_path / "wandb").exists()


def test_a_missing_wandb_package_is_a_one_line_error(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
  with pytest.raises(ImportError, match=r"pip install 'jaxdistill\[wandb\]' \(or set logging.wandb=False\)"):
    MetricWriter(tmp_path, wandb={"mode": "offline"})
