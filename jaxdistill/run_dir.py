"""What a run directory says about the run in it, read without JAX.

`pipeline.run` writes `<workdir>/run_config.json` (the run's whole config, stages and all)
before its first stage; the last stage writes `export/DONE` when it has finished. So the
CLI can tell, in a fraction of a second, whether `--workdir` already holds this very run,
finished: then it prints the run's report and exits, keeping every original figure
(metrics, training time, TensorBoard and metrics.jsonl untouched) instead of re-evaluating
and re-measuring for minutes. A finished run of a *different* config in the same workdir is
an error, since training over it would mix two runs' checkpoints and reports.
"""

from __future__ import annotations

import json
from pathlib import Path

from jaxdistill.core.errors import ConfigError

RUN_CONFIG = "run_config.json"
DONE = "DONE"  # the marker train/loop.py writes into export/ once a stage has finished


# Keys that may differ between invocations of one run: each process of a multi-process run
# has its own process_id, and logging is how a run is watched, not what it trains.
NOT_COMPARED = ("distributed", "logging")


def config_dict(config) -> dict:
  """The config as plain JSON values (tuples as lists), for comparison and storage."""
  return json.loads(config.to_json_best_effort())


def write_run_config(config, workdir) -> None:
  path = Path(workdir) / RUN_CONFIG
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(config_dict(config), indent=2, sort_keys=True))
  tmp.replace(path)


def _differences(old, new, prefix: str = "") -> list[str]:
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    # Only keys both have: a key jaxdistill added (or dropped) since the run is no change the
    # user made, and must not lock them out of their finished runs after an upgrade.
    for k in sorted(set(old) & set(new)):
      out += _differences(old[k], new[k], f"{prefix}{k}.")
    return out
  return [] if old == new else [f"{prefix[:-1]}: {old!r} -> {new!r}"]


def finished_report(config, workdir) -> str | None:
  """The text to print if `workdir` holds this run, finished; None if it must (still) train.

  Raises ConfigError if it holds a finished run of another config."""
  workdir = Path(workdir)
  done = workdir / "export" / DONE
  if not done.is_file():
    return None
  stored = workdir / RUN_CONFIG
  if stored.is_file():
    old, new = json.loads(stored.read_text()), config_dict(config)
    for key in NOT_COMPARED:
      old.pop(key, None), new.pop(key, None)
    diffs = _differences(old, new)
    if diffs:
      shown = "; ".join(diffs[:3]) + (f"; and {len(diffs) - 3} more" if len(diffs) > 3 else "")
      raise ConfigError(f"{workdir} holds a finished run of another config ({shown}); pass a new "
                        f"--workdir, or delete {workdir} to train this config there")
  report = workdir / "report.md"
  if report.is_file():
    body = report.read_text().split("<details>")[0].rstrip()  # the tables, not the config dump
  else:
    summary = json.loads(done.read_text())
    body = "\n".join(f"{split}: " + "  ".join(f"{k} {v:.4f}" for k, v in m.items()
                                             if isinstance(v, (int, float)))
                     for split, m in summary.get("student", {}).items())
  return (f"{workdir} holds this run, finished ({done}); nothing to train. Its report:\n\n{body}\n\n"
          f"(to train again, delete {workdir} or pass another --workdir)")
