#!/usr/bin/env bash
# The test command: builds the solution in Release and runs every test project.
# Prints one closing line "N passed, N failed, N skipped" and exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

results_dir="${HARNESS_TEST_RESULTS:-build/test-results}"
rm -rf "$results_dir"
mkdir -p "$results_dir"

dotnet build Harness.sln -c Release --nologo -v quiet -warnaserror

status=0
log="$results_dir/dotnet-test.log"
dotnet test Harness.sln -c Release --no-build --nologo \
  --logger "trx;LogFilePrefix=results" --results-directory "$results_dir" \
  --logger "console;verbosity=normal" "$@" 2>&1 | tee "$log" || status=$?

# Sum the per-assembly summaries ("Total tests: N" followed by "Passed: N", "Failed: N", "Skipped: N" lines).
read -r passed failed skipped < <(awk '
  /^[[:space:]]+Passed: [0-9]+[[:space:]]*$/  {p+=$2}
  /^[[:space:]]+Failed: [0-9]+[[:space:]]*$/  {f+=$2}
  /^[[:space:]]+Skipped: [0-9]+[[:space:]]*$/ {s+=$2}
  END {print p+0, f+0, s+0}' "$log")
if [[ "$passed" == 0 && "$failed" == 0 ]]; then
  echo "no test ran" >&2
  status=1
fi
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
exit "$status"
