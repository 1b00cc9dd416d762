"""Run logs: metrics as JSONL and TensorBoard in the workdir, optionally Weights & Biases.

In a multi-process run only process 0 logs; the others construct these with active=False.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional

from jaxdistill.core.progress import ProgressBar  # noqa: F401  (re-exported for the loop)


def wandb_settings(config) -> Optional[dict]:
  """The W&B settings of `config.logging` (None when off)."""
  lg = config.logging
  if not lg.wandb:
    return None
  return {"project": lg.wandb_project, "entity": lg.wandb_entity, "mode": lg.wandb_mode,
          "name": config.name, "config": config.to_dict()}


def _start_wandb(workdir: Path, settings: dict):
  try:
    import wandb  # noqa: PLC0415  (an optional extra; only a run that asks for it imports it)
  except ImportError:
    raise ImportError("Weights & Biases logging needs the wandb package: pip install "
                      "'jaxdistill[wandb]' (or set logging.wandb=False)") from None
  # One W&B run per workdir: a resumed run appends to the run it started.
  run_id = hashlib.sha1(str(Path(workdir).resolve()).encode()).hexdigest()[:16]
  return wandb.init(project=settings.get("project") or "jaxdistill",
                    entity=settings.get("entity") or None, mode=settings.get("mode") or "online",
                    name=settings.get("name") or None, dir=str(workdir),
                    config=settings.get("config") or {}, id=run_id, resume="allow")


class MetricWriter:
  """Appends {"step": s, **metrics} lines to metrics.jsonl, scalars to TensorBoard and, with
  `wandb` settings ({"project", "entity", "mode", "name", "config"}), to a W&B run."""

  def __init__(self, workdir: Path, active: bool = True, wandb: Optional[dict] = None):
    self.path = Path(workdir) / "metrics.jsonl"
    self.active, self.tb, self.wandb = active, None, None
    if not active:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    try:
      from tensorboardX import SummaryWriter  # noqa: PLC0415  (optional)
      self.tb = SummaryWriter(str(Path(workdir) / "tensorboard"))
    except ImportError:  # TensorBoard output is optional
      self.tb = None
    if wandb is not None:
      self.wandb = _start_wandb(Path(workdir), wandb)

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.active:
      return
    with self.path.open("a") as f:
      f.write(json.dumps({"step": step, **metrics}) + "\n")
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    if self.tb is not None:
      for k, v in scalars.items():
        self.tb.add_scalar(k, v, step)
    if self.wandb is not None:
      self.wandb.log(scalars, step=step)

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()
    if self.wandb is not None:
      self.wandb.finish()
      self.wandb = None
