#!/usr/bin/env bash
# Mutation testing of the model code with Stryker.NET (dotnet-stryker, pinned in dotnet-tools.json), the offline
# catalog (CatalogOfflineTests) plus the mutation-killing tests (tests/Correctness/Mutation) as the test suite.
#   ci/mutation.sh [--sample]   the short campaign on a fixed sample of mutants (ci/stryker/sample.json: Gemma4Moe.cs,
#                               with the tests that reach it: the gemma4/moe catalog scenarios and their killing tests); fails
#                               (exit 1) when the score is below the config's break threshold or when the sample
#                               holds fewer mutants than it did when the threshold was set (a sample file renamed away)
#   ci/mutation.sh --full       the full campaign over src/Engine/Models and the ops and kernels they call
#                               (ci/stryker/full.json); days on a 2-core machine (see the README)
#   ci/mutation.sh --slice NAME the full campaign one slice at a time (ci/stryker/NAME.json: attention, ...): the
#                               slice's files against the offline catalog and the correctness tests that cover them
# Extra arguments go to dotnet-stryker (e.g. --mutate '**/Ops/Rotary.cs' to narrow a run).
# Reports: build/mutation/{sample,full}/reports/mutation-report.{json,html}; a one-line summary and every surviving
# mutant (ci/stryker/survivors.py) on stdout. One test session; the full campaign runs at nice 10 (the machine is
# shared), the sample at CI's own priority.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

campaign=sample
min_mutants=50    # the sample counted 52 mutants when its floor was set (ci/stryker/sample.json)
niceness=0        # the sample is part of CI (.ci/run), which must finish in 15 minutes: the test part's priority
case "${1:-}" in
  --sample) shift ;;
  --full) campaign=full; min_mutants=0; niceness=10; shift ;;
  --slice) campaign="${2:?--slice needs a name (ci/stryker/NAME.json)}"; min_mutants=0; niceness=10; shift 2 ;;
  --help|-h) sed -n '2,15p' "$0"; exit 0 ;;
esac
config="$root/ci/stryker/$campaign.json"
[[ -f "$config" ]] || { echo "mutation: no campaign config $config" >&2; exit 2; }
out="$root/build/mutation/$campaign"
rm -rf "$out"
mkdir -p "$out"

dotnet tool restore >/dev/null
# Stryker runs from the test project's folder (from the repository root it would see Harness.sln and switch to its
# solution mode, which takes no test-project filter); it builds that project itself (Release, as ci/test.sh).
start=$(date +%s)
status=0
(cd tests/Correctness && nice -n "$niceness" dotnet tool run dotnet-stryker --config-file "$config" --output "$out" \
  --concurrency 1 --skip-version-check --log-to-file "$@") >"$out/stryker.log" 2>&1 || status=$?
elapsed=$(( $(date +%s) - start ))
report="$out/reports/mutation-report.json"
if [[ ! -f "$report" ]]; then
  tail -n 30 "$out/stryker.log" >&2
  echo "mutation ($campaign): no report (dotnet-stryker exit $status); log: $out/stryker.log" >&2
  exit 1
fi
python3 ci/stryker/survivors.py --summary "$report" --config "$config" --campaign "$campaign" --seconds "$elapsed" \
  --min-mutants "$min_mutants" || status=1
exit "$status"
