# Shared by the recipes: argument parsing and running one stage. TULU_RECIPE is how the user started the
# recipe (`tulu recipe NAME` sets it), for the message that says how to continue after a failed stage.
#   --from STAGE   skip the stages before STAGE (their run directories must exist)
#   --dry-run      print each stage's resolved config and launch command; run nothing
#   --runs DIR     where the stages' run directories go
#   --seed N       the seed of every stage (data order, initialisation, sampling); the same as seed=N
#   STAGE:key=value   a Hydra override for one stage (e.g. sft:optim.lr=1e-5; sft:resume=true continues a
#                     killed training stage instead of replacing it)
#   key=value         a Hydra override for every stage

FROM=""
DRY_RUN=""
EXTRA=()
parse_recipe_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --from) FROM="$2"; shift 2 ;;
      --from=*) FROM="${1#--from=}"; shift ;;
      --dry-run) DRY_RUN="--dry-run"; shift ;;
      --runs) RUNS="$2"; shift 2 ;;
      --runs=*) RUNS="${1#--runs=}"; shift ;;
      --seed) EXTRA+=("seed=$2"); shift 2 ;;
      --seed=*) EXTRA+=("seed=${1#--seed=}"); shift ;;
      -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
      *) EXTRA+=("$1"); shift ;;
    esac
  done
  if [ -n "$FROM" ] && ! printf '%s\n' "${STAGES[@]}" | grep -qx "$FROM"; then
    echo "unknown stage for --from: $FROM (stages: ${STAGES[*]})" >&2
    exit 2
  fi
}

# Whether STEP runs: everything from --from on.
STARTED=""
wanted() {
  [ -z "$FROM" ] || [ "$1" = "$FROM" ] && STARTED=1
  [ -n "$STARTED" ]
}

# step NAME tulu STAGE args...: run one step (overrides STEP:key=value from the command line appended).
step() {
  local name="$1"; shift
  wanted "$name" || { echo "== $name: skipped (--from $FROM)"; return 0; }
  local args=("$@") extra resuming="" kept=() arg
  for extra in "${EXTRA[@]}"; do
    case "$extra" in
      "$name":*) args+=("${extra#"$name":}") ;;
      *:*) ;;
      # `tulu eval compare` takes run directories, not config overrides.
      *) [ "${args[*]:1:2}" = "eval compare" ] || args+=("$extra") ;;
    esac
  done
  # A step given STAGE:resume=... continues its earlier run instead of replacing it (overwrite=true).
  for arg in "${args[@]}"; do case "$arg" in resume=false) ;; resume=*) resuming=1 ;; esac; done
  if [ -n "$resuming" ]; then
    for arg in "${args[@]}"; do [ "$arg" = overwrite=true ] || kept+=("$arg"); done
    args=("${kept[@]}")
  fi
  echo "== $name: ${args[*]} $DRY_RUN"
  if ! "${args[@]}" $DRY_RUN; then
    echo "== $name failed; fix it and continue with: ${TULU_RECIPE:-$0} --from $name" >&2
    exit 1
  fi
}
