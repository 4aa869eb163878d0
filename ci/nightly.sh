#!/usr/bin/env bash
# The main job: every catalog scenario against the live HF reference, with the accuracy report.
#   ci/nightly.sh [REPORT_DIR] [extra `harness run` options, e.g. --baseline last-night/report.json]
# Provisions the reference interpreter first (ci/reference-env.sh; skipped when HARNESS_PYTHON is set).
# Writes REPORT_DIR/{report.json,junit.xml,index.html} (default build/report); exits as `harness run` does: 0 all passed,
# 1 a scenario failed or (with --baseline) a regression was flagged, 2 bad input, 3 internal error.
set -euo pipefail
cd "$(dirname "$0")/.."
report="${1:-build/report}"
shift || true
if [[ -z "${HARNESS_PYTHON:-}" ]]; then
  python_path="$(ci/reference-env.sh)"
  export HARNESS_PYTHON="${python_path##*$'\n'}"
fi
dotnet build src/Harness -c Release --nologo -v quiet
exec dotnet run -c Release --project src/Harness --no-build -- run --report "$report" "$@"
