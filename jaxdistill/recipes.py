"""Stage recipes the files under configs/ share: plain dicts, no JAX (a config file is read
before any heavy import, so a typo fails in a fraction of a second).

A stage is {"name": str, "set": {dotted key: value}, "run": kind} (jaxdistill/pipeline.py).
"""

from __future__ import annotations

MINILM_TERMS = ("minilm_attention", "minilm_value", "minilm_v2")


def minilm_distil_stage(name: str, epochs: int, lr: float, **sets) -> dict:
  """A task-agnostic distillation stage: the MiniLM losses alone (no labels are read).

  Its classifier is never trained, so dev accuracy says nothing here: the last step is
  exported (select_best off) and no compression report is written."""
  return {"name": name, "set": {"train.epochs": epochs, "optim.lr": lr, "losses.hard_ce": 0.0,
                                "train.select_best": False, "report.compression": False, **sets}}


def minilm_finetune_stage(source: str, epochs: int, lr: float) -> dict:
  """Fine-tunes the distilled student `@stage:<source>` on the labels alone. The config's
  teacher stays named, only for the compression report (no loss reads it)."""
  return {"name": "finetune", "set": {
      "student.source": f"@stage:{source}", "student.init": "pretrained",
      "losses.hard_ce": 1.0, **{f"losses.{t}": 0.0 for t in MINILM_TERMS},
      "train.epochs": epochs, "optim.lr": lr}}


def unlabelled_data(stage: str) -> dict:
  """The data section of a stage that reads the corpus written by a distilbert_text stage
  named `stage`: every row unlabelled, no dev or test split (such a run is not evaluated)."""
  return {"data.task": "files", "data.train_file": f"@stage:{stage}", "data.dev_file": "",
          "data.test_file": "", "data.text_column": "text", "data.text_pair_column": "",
          "data.label_column": "", "data.label_names": (), "data.train_override": ""}
