"""Writes predictions_test.json for finished NER / SQuAD runs that predate it, from each run's
export and its own test split (config.json, the export's tokenizer), as the trainer writes it
at the end of a run now; checks that the predictions give the run's logged test F1 (to 1e-6).

    .venv/bin/python scripts/predict_token_span.py runs/ner/kd_s0 runs/ner/pkd_s1 ...
    .venv/bin/python scripts/predict_token_span.py --force runs/ner/*     # rewrite existing files

Runs one after the other in this process (inference only: 239 tweets per NER run). The
results command (python -m jaxdistill.results --task ner) then reads the files; it would make
a missing one the same way (jaxdistill.results_token_span.predict_test).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from jaxdistill.results_token_span import PREDICTIONS, predict_test
from jaxdistill.train.loop import DONE


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("runs", nargs="+", help="run directories holding export/DONE and config.json")
  p.add_argument("--force", action="store_true", help=f"rewrite {PREDICTIONS} where it exists")
  args = p.parse_args(argv)
  for run in map(Path, args.runs):
    if not (run / "export" / DONE).is_file():
      print(f"{run}: not finished (no export/{DONE}); skipped")
      continue
    if (run / PREDICTIONS).is_file() and not args.force:
      print(f"{run}: {PREDICTIONS} exists; skipped (--force rewrites it)")
      continue
    t0 = time.time()
    got = predict_test(run)  # raises a one-line DataError when it disagrees with the run's log
    logged = json.loads((run / "export" / DONE).read_text())["student"]["test"]["f1"]
    print(f"{run}: wrote {PREDICTIONS}; test F1 {got['f1']:.6f} (logged {logged:.6f}) in {time.time() - t0:.0f}s")
  return 0


if __name__ == "__main__":
  sys.exit(main())
