"""An evaluation callback: called after every dev evaluation with the step, the student's
params and the dev metrics (methods/base.py: Method.on_evaluate).

  python -m jaxdistill.train --config configs/kd.py:tiny --workdir /tmp/cb \
      --config.callbacks=examples/eval_callback.py:log_dev

Set JAXDISTILL_CALLBACK_LOG to a file to have each call appended to it as a JSON line.
"""

import json
import os

import jax


def log_dev(*, step, student_params, metrics, config):
  n = sum(x.size for x in jax.tree.leaves(student_params))
  line = {"step": int(step), "run": config.name, "params": int(n),
          **{k: float(v) for k, v in metrics.items()}}
  print(f"[callback] {config.name} step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
  path = os.environ.get("JAXDISTILL_CALLBACK_LOG")
  if path:
    with open(path, "a") as f:
      f.write(json.dumps(line) + "\n")
