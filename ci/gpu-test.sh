#!/usr/bin/env bash
# ci/gpu-test.sh [RESULTS_DIR]: the GPU job, on a runner with no dotnet, from an unpacked gpu-bundle
# (tar -xJf harness-gpu-linux-x64.tar.xz && harness-gpu/ci/gpu-test.sh) or from a repository with bin/ published.
#   1. the GPU tests (tests/harness-gpu-tests: tests/Gpu, the one GPU suite, xunit v3, self-contained): interop, cuBLAS
#      and invariant GEMM, every NVRTC kernel, batch invariance M=1..257, the tiny Llama GPU vs CPU, graph decoding, and
#      every registered family's scenarios on the GPU  -> RESULTS_DIR/gpu-tests.log, RESULTS_DIR/gpu-junit.xml
#   2. harness run --device cuda over the catalog, live against HF on the GPU when a reference interpreter is found
#      (HARNESS_PYTHON, default /opt/torch/.venv/bin/python3), else against the recorded fixtures
#                                   -> RESULTS_DIR/report/{report.json,junit.xml,index.html}
# HARNESS_REQUIRE_GPU=1 is set: no GPU fails the job instead of skipping. Exit non-zero when either step fails.
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
harness="${HARNESS_BIN:-$here/bin/harness}"
results="${1:-$here/gpu-results}"
(( $# > 0 )) && shift   # the rest: filters for harness run
mkdir -p "$results"
export NCCL_NVLS_ENABLE=0 HARNESS_REQUIRE_GPU=1 CI="${CI:-1}"
export HARNESS_FIXTURES="${HARNESS_FIXTURES:-$here/fixtures}"
if [[ -z "${HARNESS_PYTHON:-}" && -x /opt/torch/.venv/bin/python3 ]]; then export HARNESS_PYTHON=/opt/torch/.venv/bin/python3; fi
cd "$here"

status=0
tests="${HARNESS_GPU_TESTS:-$here/tests/harness-gpu-tests}"
if [[ -x "$tests" ]]; then
  "$tests" -junit "$results/gpu-junit.xml" 2>&1 | tee "$results/gpu-tests.log"
  rc=${PIPESTATUS[0]}
else
  echo "gpu-test: no GPU tests at $tests (ci/gpu-bundle.sh publishes them; HARNESS_GPU_TESTS names another path)" >&2
  rc=2
fi
(( rc != 0 )) && status=1

mode=()
if [[ -z "${HARNESS_PYTHON:-}" ]]; then
  echo "no reference interpreter (HARNESS_PYTHON): the catalog runs against the recorded fixtures"
  mode=(--offline)
fi
"$harness" run --device cuda "${mode[@]}" --report "$results/report" "$@" 2>&1 | tee "$results/run.log"
rc=${PIPESTATUS[0]}
(( rc != 0 )) && status=1
echo "gpu-test: the GPU tests and run --device cuda $([[ $status == 0 ]] && echo passed || echo FAILED); results in $results"
exit $status
