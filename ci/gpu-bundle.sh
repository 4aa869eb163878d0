#!/usr/bin/env bash
# ci/gpu-bundle.sh [OUT_DIR]: the harness CLI for a GPU runner with no dotnet, as one archive,
# OUT_DIR/harness-gpu-linux-x64.tar.xz (default OUT_DIR: build/gpu-bundle), under 60 MB:
#   bin/harness        self-contained, trimmed linux-x64 publish of src/Harness (the engine, CUDA interop included)
#   tests/harness-gpu-tests  the one GPU test suite (tests/Gpu, xunit v3, in Harness.sln) self-contained: `harness-gpu-tests -junit FILE`
#   fixtures/          the recorded references and tiny models (offline tier; the GPU checks' tiny Llama); left out with
#                      BUNDLE_FIXTURES=0 for the device tool, which carries the working tree (fixtures included) beside
#                      the bundle under a 64 MiB limit (then run from the repository root)
#   ci/gpu-test.sh     the GPU job: the GPU tests + `harness run --device cuda` over the catalog, report + JUnit
#   ci/gpu-graph-bench.sh  graph decoding per family (check-gpu decode + bench --device cuda; ci/make-bench-model.py)
#   ci/gpu-seed-bugs.sh    the seed bugs end to end at published dims (compare clean and with each fault; ci/make-published-dims.py)
# BUNDLE_SPLIT=1 writes tests/ as a second archive, OUT_DIR/harness-gpu-tests-linux-x64.tar.xz (both unpack into the same
# harness-gpu/): the device tool carries the working tree (42 MiB, fixtures 36) and the carried paths under one 64 MiB
# limit, so the CLI archive goes with one call and the tests archive with the next (the machine keeps /tmp while warm).
# The CUDA libraries are not bundled: the engine finds them at run time (HARNESS_CUDA_LIB_DIR, a torch venv's
# nvidia wheels, /usr/local/cuda; see src/Engine/Cuda/Interop/CudaLibraries.cs).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-build/gpu-bundle}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
root="$stage/harness-gpu"
mkdir -p "$root/ci"
dotnet publish src/Harness/Harness.csproj -c Release -r linux-x64 --self-contained \
  -p:PublishTrimmed=true -p:TreatWarningsAsErrors=false -p:SuppressTrimAnalysisWarnings=true -p:DebugType=none \
  -o "$root/bin" >&2
# the GPU tests (tests/Gpu: every check-gpu check and every family's scenarios on the GPU, xunit v3) self-contained; partial
# trimming (the framework only) keeps xunit's reflection intact
dotnet publish tests/Gpu/Gpu.csproj -c Release -r linux-x64 --self-contained \
  -p:PublishTrimmed=true -p:TrimMode=partial -p:TreatWarningsAsErrors=false -p:SuppressTrimAnalysisWarnings=true -p:DebugType=none \
  -o "$root/tests" >&2
[[ ${BUNDLE_FIXTURES:-1} == 0 ]] || cp -r fixtures "$root/fixtures"
cp ci/gpu-test.sh ci/gpu-graph-bench.sh ci/gpu-seed-bugs.sh ci/make-bench-model.py ci/make-bench-llama.py ci/make-published-dims.py "$root/ci/"
# the reference worker's files make-published-dims.py builds the multimodal checkpoints with (Gemma3n's config reader,
# the processors)
cp src/Reference/python/ext/gemma3n.py src/Reference/python/ext/media.py "$root/ci/"
git rev-parse HEAD > "$root/COMMIT" 2>/dev/null || true
pack() {   # pack ARCHIVE PATH...: tar of the named parts of harness-gpu/, xz'd, under the 60 MB limit
  local archive="$1"; shift
  tar -C "$stage" -cf - "$@" | xz -T0 -6 > "$archive"     # -T0: every core (minutes on one)
  local size; size=$(stat -c %s "$archive")
  echo "$archive: $((size / 1024 / 1024)) MB ($size bytes)"
  if (( size >= 60 * 1024 * 1024 )); then
    echo "error: the bundle $archive is $size bytes, over the 60 MB limit" >&2
    exit 1
  fi
}
if [[ ${BUNDLE_SPLIT:-0} == 1 ]]; then
  pack "$out/harness-gpu-tests-linux-x64.tar.xz" harness-gpu/tests
  mv "$root/tests" "$stage/tests.split"
  pack "$out/harness-gpu-linux-x64.tar.xz" harness-gpu
else
  pack "$out/harness-gpu-linux-x64.tar.xz" harness-gpu
fi
