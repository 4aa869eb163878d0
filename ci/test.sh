#!/usr/bin/env bash
# The test command: provisions the reference interpreter (HF transformers + torch, see ci/reference-env.sh;
# skipped when HARNESS_PYTHON is set), builds the solution in Release and runs every test project, the live
# reference tier included. Extra arguments go to `dotnet test` (e.g. --filter "Tier!=Live").
# Prints one closing line "N passed, N failed, N skipped" and exits non-zero on any failure.
#   HARNESS_REQUIRE_REFERENCE=1  live tests fail instead of skipping when no interpreter is found (CI sets it)
#   HARNESS_SKIP_PROVISION=1     do not build the reference environment (live tests then skip unless required)
#   HARNESS_BESIDE_CORRECTNESS=CMD   run CMD (bash -c) once the E2E and Gpu projects are done, beside the Correctness
#                                project's last minutes (its serial collection, one thread); its output is printed after
#                                the tests and its failure fails the run (.ci/run: the mutation sample)
# The test projects run as two lanes on the two cores: Correctness (the longest: its parallel collections, then the
# serial one alone) beside E2E then Gpu; their trx files are results-<project>_*.trx, their logs dotnet-test-<project>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${HARNESS_PYTHON:-}" && "${HARNESS_SKIP_PROVISION:-0}" != 1 ]]; then
  if python_path="$(ci/reference-env.sh)"; then
    export HARNESS_PYTHON="${python_path##*$'\n'}"
    echo "reference interpreter: $HARNESS_PYTHON"
  elif [[ "${HARNESS_REQUIRE_REFERENCE:-0}" == 1 ]]; then
    echo "error: could not provision the reference interpreter and HARNESS_REQUIRE_REFERENCE=1" >&2
    exit 1
  else
    echo "warning: no reference interpreter; live tests will be skipped" >&2
  fi
fi

results_dir="${HARNESS_TEST_RESULTS:-build/test-results}"
rm -rf "$results_dir"
mkdir -p "$results_dir"

# The E2E tests open the HTML report in Debian's Chromium (through Microsoft.Playwright, no browser download).
if ! command -v chromium >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
  echo "installing chromium for the report E2E tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null \
    || echo "warning: could not install chromium; the report page tests will skip (or fail with HARNESS_REQUIRE_BROWSER=1)" >&2
fi

dotnet build Harness.sln -c Release --nologo -v quiet -warnaserror
dotnet tool restore >/dev/null

status=0
# One project's tests: `dotnet test` with coverage, its trx and its log (echoed as it runs).
run_project() {
  local name="$1"; shift
  dotnet test "tests/$name/$name.csproj" -c Release --no-build --nologo \
    --collect:"XPlat Code Coverage" --settings ci/coverage.runsettings \
    --logger "trx;LogFilePrefix=results-$name" --results-directory "$results_dir" \
    --logger "console;verbosity=normal" "$@" 2>&1 | tee "$results_dir/dotnet-test-$name.log"
}
run_project Correctness "$@" & correctness=$!
lane=0
run_project E2E "$@" || lane=1
run_project Gpu "$@" || lane=1
beside=0
if [[ -n "${HARNESS_BESIDE_CORRECTNESS:-}" ]]; then
  echo "tests: E2E and Gpu done; beside the Correctness project: $HARNESS_BESIDE_CORRECTNESS"
  bash -c "$HARNESS_BESIDE_CORRECTNESS" >"$results_dir/beside.log" 2>&1 || beside=$?
fi
wait "$correctness" || status=$?
(( lane == 0 )) || status=1

# Sum the per-assembly summaries ("Total tests: N" followed by "Passed: N", "Failed: N", "Skipped: N" lines).
read -r passed failed skipped < <(awk '
  /^[[:space:]]+Passed: [0-9]+[[:space:]]*$/  {p+=$2}
  /^[[:space:]]+Failed: [0-9]+[[:space:]]*$/  {f+=$2}
  /^[[:space:]]+Skipped: [0-9]+[[:space:]]*$/ {s+=$2}
  END {print p+0, f+0, s+0}' "$results_dir"/dotnet-test-*.log)
if [[ "$passed" == 0 && "$failed" == 0 ]]; then
  echo "no test ran" >&2
  status=1
fi
# Coverage: coverlet's cobertura files, rendered by ReportGenerator into build/coverage (index.html, Summary.txt).
coverage_dir="${HARNESS_COVERAGE_DIR:-build/coverage}"
if compgen -G "$results_dir/*/coverage.cobertura.xml" >/dev/null; then
  dotnet tool run reportgenerator "-reports:$results_dir/*/coverage.cobertura.xml" "-targetdir:$coverage_dir" \
    "-reporttypes:Html;TextSummary" -verbosity:Warning >/dev/null || echo "warning: ReportGenerator failed" >&2
  if [[ -f "$coverage_dir/Summary.txt" ]]; then
    echo "coverage: $(grep -E '^ *Line coverage:' "$coverage_dir/Summary.txt" | sed -E 's/^ *//') (HTML: $coverage_dir/index.html)"
  fi
fi

if [[ -n "${HARNESS_BESIDE_CORRECTNESS:-}" ]]; then
  cat "$results_dir/beside.log"
  if (( beside != 0 )); then echo "$HARNESS_BESIDE_CORRECTNESS: exit $beside" >&2; status=1; fi
fi
echo "${passed} passed, ${failed} failed, ${skipped} skipped"
exit "$status"
