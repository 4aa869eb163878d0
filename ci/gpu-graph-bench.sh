#!/usr/bin/env bash
# ci/gpu-graph-bench.sh ARCHIVE OUT: graph decoding per family on a GPU runner (issue 20 item 2): check-gpu's decode
# checks, then `harness bench --device cuda` per family on the tiny fixtures models and at 1B-class widths (written first
# by ci/make-bench-model.py on the GPU). ARCHIVE is ci/gpu-bundle.sh's harness-gpu-linux-x64.tar.xz (or .tar.gz); OUT receives
# check.txt, bench-tiny.txt, bench-big.txt. Needs HARNESS_PYTHON (torch with CUDA, transformers; default the torch venv).
# Environment: SKIP_CHECKS=1, TINY="model ..." (fixtures/models names), TINY_PROMPT (32), BIG="NAME[:LAYERS] ..." (default:
# all four families and Gemma4's MoE decoder (tiny-gemma4-moe-bf16; gemma4-moe-1b-class: make-bench-model.py's MoE config
# at hidden 1536, 32 experts of 768, top 4); Gemma3n and Gemma4 need >= 15 layers for a full-attention layer before the
# KV-shared ones, the MoE config has no KV sharing).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
archive="$1"; OUT="$2"; mkdir -p "$OUT"
mkdir -p /tmp/hb && tar xf "$archive" -C /tmp/hb
# the tiny models: HARNESS_FIXTURES, else the repository's fixtures beside this script, else the bundle's own
# (a bundle made with BUNDLE_FIXTURES=0 has none: the 2026-12-07 run's tiny rows found nothing there)
fx="${HARNESS_FIXTURES:-$here/../fixtures}"; [[ -d $fx/models ]] || fx=/tmp/hb/harness-gpu/fixtures
export HARNESS_FIXTURES="$(cd "$fx" 2>/dev/null && pwd || echo "$fx")"
cd /tmp/hb/harness-gpu; H=$PWD/bin/harness
export HARNESS_PYTHON="${HARNESS_PYTHON:-/opt/torch/.venv/bin/python3}" NCCL_NVLS_ENABLE=0 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/card.txt"
t0=$(date +%s); el() { echo "[$(( $(date +%s) - t0 )) s]"; }
if [[ "${SKIP_CHECKS:-0}" != 1 ]]; then
  timeout 110 $H check-gpu decode 2>&1 | tee "$OUT/check.txt" | grep -E "PASS|FAIL|passed|FAILED"; el
fi
summ() { grep -E "^model|^eng|^HF|NO GRAPH|DIFFER|rror|Exception|bench|/ HF|decode step, graph|greedy tokens" ; }
for m in ${TINY-tiny-llama-bf16 tiny-gemma3n-bf16 tiny-gemma4-e2b-like-bf16 tiny-gemma4-moe-bf16 tiny-qwen2-vl-bf16}; do
  p=${TINY_PROMPT:-32}; [[ $m == tiny-gemma3n* ]] && p=16                     # its max_position_embeddings is 96
  echo "=== $m"; timeout 60 $H bench --model "$HARNESS_FIXTURES/models/$m" --device cuda --new 64 --prompt $p --runs 2 2>&1 | tee -a "$OUT/bench-tiny.txt" | summ; el
done
for row in ${BIG-llama-3.2-1b qwen2-vl-2b:12 gemma3n-e2b-text:15 gemma4-1b-class:15 gemma4-moe-1b-class:10}; do
  IFS=: read -r name layers <<< "$row"
  d=/tmp/big/$name; echo "=== $name (layers ${layers:-all})"
  timeout 120 "$HARNESS_PYTHON" "$here/make-bench-model.py" "$name" "$d" --device cuda ${layers:+--layers $layers} 2>&1 | grep -v -E "Writing|Loading|Unrecognized" | tail -1 | tee -a "$OUT/bench-big.txt"; el
  timeout 150 $H bench --model "$d" --device cuda --new 64 --prompt 64 --runs 2 2>&1 | tee -a "$OUT/bench-big.txt" | summ; el
  rm -rf "$d"
done
