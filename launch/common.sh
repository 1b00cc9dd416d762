# Shared by the launch scripts (sourced, not run): reads --config, --workdir and pass-through
# --config.* overrides into TRAIN_ARGS, and runs a command or, with DRY_RUN=1, prints it.

usage() {
  echo "usage: $USAGE" >&2
  exit 2
}

fail() {
  echo "error: $*" >&2
  usage
}

parse_train_args() {
  local config="" workdir=""
  local -a overrides=()
  while (($#)); do
    case "$1" in
      -h | --help) echo "usage: $USAGE"; exit 0 ;;
      --config) (($# >= 2)) || fail "--config needs a value"; config=$2; shift 2 ;;
      --config=*) config=${1#--config=}; shift ;;
      --workdir) (($# >= 2)) || fail "--workdir needs a value"; workdir=$2; shift 2 ;;
      --workdir=*) workdir=${1#--workdir=}; shift ;;
      --config.*=*) overrides+=("$1"); shift ;;
      --config.*) (($# >= 2)) || fail "$1 needs a value"; overrides+=("$1" "$2"); shift 2 ;;
      *) fail "unexpected argument '$1'; overrides look like --config.optim.lr=3e-5" ;;
    esac
  done
  [[ -n $config ]] || fail "--config is required (e.g. configs/kd.py)"
  [[ -n $workdir ]] || fail "--workdir is required"
  TRAIN_ARGS=(-m jaxdistill.train --config "$config" --workdir "$workdir" ${overrides[@]+"${overrides[@]}"})
}

run() {
  if [[ ${DRY_RUN:-0} == 1 ]]; then
    local line
    printf -v line '%q ' "$@"
    echo "${line% }"
  else
    exec "$@"
  fi
}
