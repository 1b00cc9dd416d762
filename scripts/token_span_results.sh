#!/usr/bin/env bash
# The NER and SQuAD rows of the README: one fine-tuned teacher per task, then the no-teacher
# student, KD (and PKD on NER) over seeds, every student reading the same teacher. Resumable:
# a finished run is reported and skipped. Then: python scripts/collect_token_span.py
#   bash scripts/token_span_results.sh [ner|squad|all] [seeds...]
set -euo pipefail
PY=${PY:-python}
TASKS=${1:-all}; shift || true
SEEDS=${*:-0 1 2}
run() { $PY -m jaxdistill.train "$@" || exit 1; }
if [[ $TASKS == ner || $TASKS == all ]]; then
  run --config configs/ner_finetune.py --workdir runs/ner/teacher
  for s in $SEEDS; do
    for m in student_finetune kd pkd; do
      run --config configs/ner_$m.py --workdir runs/ner/${m}_s$s --config.seed=$s \
          $([[ $m != student_finetune ]] && echo "--config.teacher.source=runs/ner/teacher/export --config.teacher.finetune=False")
    done
  done
fi
if [[ $TASKS == squad || $TASKS == all ]]; then
  run --config configs/squad_finetune.py --workdir runs/squad/teacher
  for s in $SEEDS; do
    for m in student_finetune kd; do
      run --config configs/squad_$m.py --workdir runs/squad/${m}_s$s --config.seed=$s \
          $([[ $m != student_finetune ]] && echo "--config.teacher.source=runs/squad/teacher/export --config.teacher.finetune=False")
    done
  done
fi
