#!/usr/bin/env python3
"""Reads a Stryker.NET JSON report (mutation-report.json).

  survivors.py REPORT.json [STATUS ...]        every mutant of those statuses (default: Survived NoCoverage Timeout
                                               is killed, so not listed): file:line [id] mutator: original -> mutant
  survivors.py --summary REPORT.json --config CONFIG.json --campaign NAME --seconds N [--min-mutants M]
                                               one summary line, the survivors, and exit 1 when the score is below the
                                               config's thresholds.break or the report holds fewer tested mutants than
                                               --min-mutants M (a sample file renamed away shrinks the sample)

Score as Stryker's: (Killed + Timeout) / (Killed + Timeout + Survived + NoCoverage); CompileError and Ignored mutants
are not counted.
"""
import argparse, json, sys
from collections import Counter


def mutants(report):
    for path, f in sorted(report["files"].items()):
        lines = f["source"].split("\n")
        for m in sorted(f["mutants"], key=lambda m: (m["location"]["start"]["line"], m["location"]["start"]["column"])):
            s, e = m["location"]["start"], m["location"]["end"]
            if s["line"] == e["line"]:
                orig = lines[s["line"] - 1][s["column"] - 1:e["column"] - 1]
            else:
                orig = lines[s["line"] - 1][s["column"] - 1:] + " ..."
            rel = path.split("/src/Engine/")[-1]
            yield m, rel, s["line"], " ".join(orig.split())


def describe(m, rel, line, orig):
    repl = " ".join(m.get("replacement", "").split())
    return f"{m['status']:10} {rel}:{line} [{m['id']}] {m['mutatorName']}: {orig[:100]!r} -> {repl[:100]!r}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("report")
    ap.add_argument("statuses", nargs="*")
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--config")
    ap.add_argument("--campaign", default="campaign")
    ap.add_argument("--seconds", type=int, default=0)
    ap.add_argument("--min-mutants", type=int, default=0)
    a = ap.parse_args()
    report = json.load(open(a.report))
    all_mutants = list(mutants(report))
    if not a.summary:
        wanted = set(a.statuses) or {"Survived", "NoCoverage"}
        for m, rel, line, orig in all_mutants:
            if m["status"] in wanted:
                print(describe(m, rel, line, orig))
        return 0
    c = Counter(m["status"] for m, *_ in all_mutants)
    detected = c["Killed"] + c["Timeout"]
    undetected = c["Survived"] + c["NoCoverage"]
    tested = detected + undetected
    score = 100.0 * detected / tested if tested else 0.0
    cfg = json.load(open(a.config))["stryker-config"] if a.config else {}
    floor = cfg.get("thresholds", {}).get("break", 0)
    min_mutants = a.min_mutants
    for m, rel, line, orig in all_mutants:
        if m["status"] in ("Survived", "NoCoverage"):
            print(describe(m, rel, line, orig))
    print(f"mutation ({a.campaign}): score {score:.2f}% = {detected} killed ({c['Timeout']} by timeout) of {tested} "
          f"({c['Survived']} survived, {c['NoCoverage']} not covered; {c['CompileError']} compile errors not counted), "
          f"{a.seconds} s; floor {floor}%")
    ok = True
    if score < floor:
        print(f"mutation ({a.campaign}): FAILED: score {score:.2f}% is below the floor of {floor}% "
              f"(a check of the offline catalog stopped catching a mutant: see the survivors above)", file=sys.stderr)
        ok = False
    if tested < min_mutants:
        print(f"mutation ({a.campaign}): FAILED: {tested} mutants tested, the sample was fixed at {min_mutants} or more "
              f"(a file of {a.config}'s mutate list moved or shrank: update the sample)", file=sys.stderr)
        ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
