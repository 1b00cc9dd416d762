"""Run logs: a progress bar on the terminal, metrics as JSONL and TensorBoard in the workdir.

In a multi-process run only process 0 logs; the others construct these with active=False.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


class MetricWriter:
  """Appends {"step": s, **metrics} lines to metrics.jsonl and scalars to TensorBoard."""

  def __init__(self, workdir: Path, active: bool = True):
    self.path = Path(workdir) / "metrics.jsonl"
    self.active, self.tb = active, None
    if not active:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    try:
      from tensorboardX import SummaryWriter
      self.tb = SummaryWriter(str(Path(workdir) / "tensorboard"))
    except ImportError:  # TensorBoard output is optional
      self.tb = None

  def write(self, step: int, metrics: dict[str, float]) -> None:
    if not self.active:
      return
    with self.path.open("a") as f:
      f.write(json.dumps({"step": step, **metrics}) + "\n")
    if self.tb is not None:
      for k, v in metrics.items():
        if isinstance(v, (int, float)):
          self.tb.add_scalar(k, v, step)

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()


class ProgressBar:
  """A rich progress bar showing loss and examples/s; plain lines when not a terminal."""

  def __init__(self, description: str, total: int, start: int = 0, active: bool = True):
    self.active = active
    self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                             TimeRemainingColumn())
    self.task = self.progress.add_task(description, total=total, completed=start, info="")
    if active:
      self.progress.start()
    self.interactive = self.progress.console.is_terminal
    self.description = description
    self.last_print = 0.0

  def update(self, step: int, info: str) -> None:
    self.progress.update(self.task, completed=step, info=info)
    quiet = not self.active or self.interactive
    if not quiet and time.time() - self.last_print > 20:  # CI logs: a line every 20 s
      self.progress.console.print(f"{self.description} step {step}: {info}", highlight=False)
      self.last_print = time.time()

  def close(self) -> None:
    self.progress.stop()
