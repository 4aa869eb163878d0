#!/usr/bin/env bash
# ci/gpu-real-size.sh BIN OUT [ROW...]: `harness compare --device cuda` at published dimensions on a GPU runner (issue 22's
# README table). BIN is the harness binary (bin/harness of ci/gpu-bundle.sh's archive); OUT receives log.txt. Each ROW is
# NAME:DTYPE:TP:PROMPT[:EXTRA] (EXTRA: one more compare argument, e.g. --image; NAME may be a model folder); the checkpoint is written first by
# ci/make-published-dims.py on the GPU (random weights, published config). Needs HARNESS_PYTHON (torch with CUDA,
# transformers). Every row is bounded by ROW_TIMEOUT seconds (default 240); a row that fails or times out is logged and the
# next one runs.
set -uo pipefail
bin="$1"; out="$2"; shift 2
here="$(cd "$(dirname "$0")" && pwd)"
models="${MODELS_DIR:-/tmp/published}"
mkdir -p "$out" "$models"
log="$out/log.txt"
export NCCL_NVLS_ENABLE=0 HARNESS_REFERENCE_DEVICE="${HARNESS_REFERENCE_DEVICE:-cuda}" CI=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$log"
for row in "$@"; do
  IFS=: read -r name dtype tp prompt extra <<< "$row"
  dir="$models/$name-$dtype"
  if [[ -d $name ]]; then dir="$name"; name="$(basename "$name")"; fi          # an existing folder (a fixtures model) as is
  if [[ ! -f $dir/config.json ]]; then
    t0=$(date +%s)
    "$HARNESS_PYTHON" "$here/make-published-dims.py" "$name" "$dir" --dtype "$dtype" --device cuda 2>&1 | grep -v -E "Writing|Loading" | tail -2 | tee -a "$log"
    echo "wrote $dir in $(( $(date +%s) - t0 )) s" | tee -a "$log"
  fi
  echo "=== compare $name $dtype tp=$tp prompt=$prompt ${extra:-} ===" | tee -a "$log"
  t0=$(date +%s)
  # shellcheck disable=SC2086
  timeout "${ROW_TIMEOUT:-240}" "$bin" compare --model "$dir" --device cuda --dtype "$dtype" --tp "$tp" --prompt-length "$prompt" ${extra:-} \
    > "$out/$name-$dtype-tp$tp.txt" 2>&1
  code=$?
  grep -E "^(scenario|memory|phases|wall time|peak memory|comparison|token comparison)|DIVERG|FAIL|harness:" "$out/$name-$dtype-tp$tp.txt" | head -20 | tee -a "$log"
  echo "exit $code in $(( $(date +%s) - t0 )) s" | tee -a "$log"
done
