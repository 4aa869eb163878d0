#!/usr/bin/env bash
# Replays Stryker.NET mutants by id in a campaign's mutated engine (README "Mutation testing", ci/stryker/replay/).
#
#   ci/stryker/replay.sh MUTATED TESTS --out FILE (--ids ID,FROM-TO... | --ids-file F) (--test PATTERN... | --tests-file F)
#                        [--mutants MAP.tsv] [--limit SECONDS] [--fresh]
#
#   MUTATED  the mutated Harness.Engine.dll, or the folder holding it: a copy of tests/Correctness/bin/Release/net10.0
#            taken while a campaign ran (ci/mutation.sh; Stryker compiles every mutant of the engine into that one dll)
#   TESTS    the test build whose tests judge the mutants (e.g. tests/Correctness/bin/Debug/net10.0 of a branch with new
#            killing tests); its engine source must be the campaign's (same public API), only the tests may differ
#   --out    one line per mutant, tab-separated: id, file:line, mutator, killed|survived|timeout|crashed|compile-error
#            (its id is not in the assembly: Stryker rolled it back), seconds, the
#            first failing test; appended, and ids already in it are skipped (a stopped replay resumes)
#   --mutants  ci/stryker/mutants.py's table (ids to file:line and mutator); --ids-file may be the same table
#   --test   the tests, in run order (fast ones first: a mutant stops at its first failing test); a substring of
#            'Namespace.Class.Method(row)', e.g. 'Mutation.Gemma4' or 'CatalogOfflineTests.Scenario_against_the_recorded_reference(gemma4'
#   --limit  seconds per test (default 300); past it the mutant is a timeout (a hang) and the runner restarts after it
#   --fresh  one process per mutant: for mutants in static initializers or statically cached values, and to confirm
#            survivors (a process reads a static initializer once, before the first mutant is set)
#
# Every chosen test first runs with no mutant active and must pass (else exit 2). Runs at nice 10, one test at a time.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"   # relative paths stay the caller's (the tests find fixtures/ above the working directory)
[[ $# -ge 2 ]] || { sed -n '2,21p' "$0"; exit 2; }
mutated=$1 tests=$2
shift 2
[[ -d "$mutated" ]] && mutated="$mutated/Harness.Engine.dll"
[[ -f "$mutated" ]] || { echo "replay: $mutated: no mutated Harness.Engine.dll" >&2; exit 2; }
[[ -f "$tests/Harness.Correctness.dll" ]] || { echo "replay: $tests: no Harness.Correctness.dll (build the tests first)" >&2; exit 2; }

out="" map="" fresh=0 ids=() pass=()
while (($#)); do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --fresh) fresh=1; shift ;;
    --ids) IFS=', ' read -r -a more <<< "$2"; ids+=("${more[@]}"); shift 2 ;;
    --ids-file) [[ -f "$2" ]] || { echo "replay: $2: no such file" >&2; exit 2; }
                while read -r first _; do [[ "$first" =~ ^[0-9]+$ ]] && ids+=("$first"); done < "$2"; shift 2 ;;
    --mutants) map=$2; pass+=("$1" "$2"); shift 2 ;;
    --test|--tests-file|--limit) pass+=("$1" "$2"); shift 2 ;;
    *) echo "replay: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[[ -n "$out" ]] || { echo "replay: --out FILE is required (the driver resumes from it)" >&2; exit 2; }
# ranges FROM-TO to single ids
expanded=()
for i in "${ids[@]}"; do
  if [[ "$i" =~ ^([0-9]+)-([0-9]+)$ ]]; then expanded+=($(seq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"));
  elif [[ "$i" =~ ^[0-9]+$ ]]; then expanded+=("$i");
  else echo "replay: '$i' is not a mutant id or FROM-TO range" >&2; exit 2; fi
done
ids=("${expanded[@]}")

# the runner: built on demand, outside Harness.sln (REPLAY_RUNNER: a runner built elsewhere, used as it is)
runner="${REPLAY_RUNNER:-$root/build/replay/Harness.MutantReplay.dll}"
if [[ -z "${REPLAY_RUNNER:-}" && ( ! -f "$runner" || -n "$(find "$root/ci/stryker/replay" -newer "$runner" -name '*.cs*' -print -quit)" ) ]]; then
  nice -n 10 dotnet build "$root/ci/stryker/replay/Replay.csproj" -c Release -o "$root/build/replay" -v quiet --nologo >&2
fi
export DOTNET_GCHeapHardLimit="${DOTNET_GCHeapHardLimit:-0x100000000}"   # 4 GiB: a mutant that allocates without end fails, not the machine
touch "$out"
runner_args=(--tests "$tests" --engine "$mutated" --out "$out" "${pass[@]}")

remaining() {   # the ids without a line in $out yet
  local done_ids
  done_ids=$(awk -F'\t' '{print $1}' "$out" | sort -u)
  for i in "${ids[@]}"; do grep -qx "$i" <<< "$done_ids" || echo "$i"; done
}

baseline=()
if ((fresh)); then
  nice -n 10 dotnet "$runner" "${runner_args[@]}" || exit $?   # no ids: the baseline alone
  baseline=(--no-baseline)
fi
while true; do
  mapfile -t rest < <(remaining)
  ((${#rest[@]})) || break
  batch=("${rest[@]}")
  ((fresh)) && batch=("${rest[0]}")
  status=0
  nice -n 10 dotnet "$runner" "${runner_args[@]}" "${baseline[@]}" --ids "$(IFS=,; echo "${batch[*]}")" || status=$?
  baseline=(--no-baseline)
  case "$status" in
    0) ;;
    3) ;;   # a timeout: its line is written; go on after it
    2) exit 2 ;;   # bad arguments or a test that fails with no mutant active
    *) # the process died inside a mutant (a stack overflow, an abort): the first id without a line
       mapfile -t left < <(remaining)
       ((${#left[@]})) || break
       label=$'?\t?'
       [[ -n "$map" ]] && label=$(awk -F'\t' -v id="${left[0]}" '$1 == id {print $2 "\t" $3; exit}' "$map")
       printf '%s\t%s\tcrashed\t-\tthe test process died (exit %s)\n' "${left[0]}" "${label:-?	?}" "$status" >> "$out" ;;
  esac
done
awk -F'\t' '$1 != "-1" {n[$4]++} END {for (v in n) printf "%s %d  ", v, n[v]; print ""}' "$out"
