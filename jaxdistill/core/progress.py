"""A rich progress bar on the terminal, plain lines every 20 s when not a terminal (CI logs).

In core so that data preparation (augmentation stages) and the train loop show progress the
same way without data/ importing train/.
"""

from __future__ import annotations

import time

from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


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
