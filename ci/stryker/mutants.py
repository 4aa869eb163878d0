#!/usr/bin/env python3
"""The mutants of a Stryker.NET campaign by id, for replay by id (ci/stryker/replay.sh).

  mutants.py SOURCE [--file REGEX] [--all] [--assembly MUTATED/Harness.Engine.dll]

SOURCE is the campaign's debug log (build/mutation/NAME/logs/log-*.txt, written with --log-to-file: it names every
mutant as Stryker creates it, before any test runs) or its final report (reports/mutation-report.json). Prints one
tab-separated line per mutant: id, file:line, mutator, "original -> mutant" (whitespace collapsed), for the mutants
Stryker would test in the files whose path (under src/Engine/) matches REGEX: without those its rollback removed
(compile errors) and those in calls of the config's ignore-methods (the profiler's Add and Now).  --all keeps them,
with the reason in a fifth column.

Stryker numbers every mutant of the whole engine in one pass (one source tree, one numbering), so the ids of a file
are the same in every campaign of the same engine source, whatever its `mutate` list: a slice's mutants can be
replayed in the mutated engine of another slice's campaign.

From a log the line is found by searching each mutant's original text in the file from the previous mutant's position
on (Stryker creates them in source order, an expression before the ones inside it); "?" where the text is not found.
A report gives Stryker's own locations. --assembly also marks compile-error the mutants the mutated assembly does not
hold (no `ldc.i4 ID` in its IL: a rollback the log did not name; ids below 128 are taken as held).
"""
import argparse, json, os, re, sys

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+[+-]\d\d:\d\d\s+\[")
MUTATING = re.compile(r'\[DBG\] Mutating "([^"]+)"')
CREATED = re.compile(r'\[DBG\] Mutant (\d+) created "(.*)" -> "(.*)" using "Stryker\.Core\.Mutators\.(\w+?)(?:Mutator)?" \(\w+\)\s*$',
                     re.S)
ROLLBACK = re.compile(r'\[DBG\] RollBacking mutations from "([^"]+)"')
FOUND = re.compile(r"\[DBG\] Found mutant (\d+) of type")
IGNORED = re.compile(r"Profile\.(Add|Now)\b")   # ci/stryker/*.json: "ignore-methods": ["*Profile.Add", "*Profile.Now"]


def entries(path):
    """The log's entries, a multi-line message (a mutated block) joined to its first line."""
    cur = None
    with open(path, errors="replace") as f:
        for line in f:
            if STAMP.match(line):
                if cur is not None:
                    yield cur
                cur = line.rstrip("\n")
            elif cur is not None:
                cur += "\n" + line.rstrip("\n")
    if cur is not None:
        yield cur


def rel(path):
    return path.split("/src/Engine/")[-1]


def from_log(path):
    mutants, rolled, src_path = {}, set(), None
    for e in entries(path):
        m = MUTATING.search(e)
        if m:
            src_path = m.group(1)
            continue
        m = CREATED.search(e)
        if m:
            orig = m.group(2).replace('\\"', '"')
            mutants[int(m.group(1))] = dict(path=src_path, orig=orig, repl=m.group(3).replace('\\"', '"'),
                                            mutator=m.group(4))
            continue
        m = FOUND.search(e)
        if m and int(m.group(1)) >= 0:
            rolled.add(int(m.group(1)))
    # lines: search the original text in source order, per file
    by_file = {}
    for i in sorted(mutants):
        by_file.setdefault(mutants[i]["path"], []).append(i)
    for p, ids in by_file.items():
        try:
            text = open(p, errors="replace").read()
        except OSError:
            text = None
        pos = 0
        for i in ids:
            m = mutants[i]
            at = text.find(m["orig"], pos) if text is not None else -1
            if at < 0 and text is not None:
                at = text.find(m["orig"])
            if at >= 0:
                pos = at
                m["line"] = text.count("\n", 0, at) + 1
                m["span"] = (at, at + len(m["orig"]))
            else:
                m["line"] = "?"
    for i, m in mutants.items():
        m["status"] = "compile-error" if i in rolled else ("ignored" if IGNORED.search(m["orig"]) else "")
    # Stryker's "block already covered" filter: a block removal is not tested when a mutant inside the block is
    for p, ids in by_file.items():
        inner = [mutants[i]["span"][0] for i in ids if "span" in mutants[i] and not mutants[i]["status"]]
        for i in ids:
            m = mutants[i]
            if m["mutator"] == "Block" and not m["status"] and "span" in m:
                s, e = m["span"]
                if any(s < at < e for at in inner):
                    m["status"] = "block-covered"
    return mutants


def from_report(path):
    report = json.load(open(path))
    mutants = {}
    for p, f in report["files"].items():
        lines = f["source"].split("\n")
        for m in f["mutants"]:
            s, e = m["location"]["start"], m["location"]["end"]
            if s["line"] == e["line"]:
                orig = lines[s["line"] - 1][s["column"] - 1:e["column"] - 1]
            else:
                orig = "\n".join([lines[s["line"] - 1][s["column"] - 1:]] + lines[s["line"]:e["line"] - 1]
                                 + [lines[e["line"] - 1][:e["column"] - 1]])
            status = {"CompileError": "compile-error", "Ignored": "ignored"}.get(m["status"], "")
            mutants[int(m["id"])] = dict(path=p, orig=orig, repl=m.get("replacement", ""), line=s["line"],
                                         mutator=m["mutatorName"].replace(" mutation", "").replace(" ", ""), status=status)
    return mutants


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source")
    ap.add_argument("--file", default="", help="regular expression on the path under src/Engine/")
    ap.add_argument("--all", action="store_true", help="also the compile errors and ignored mutants (fifth column)")
    ap.add_argument("--assembly", help="the campaign's mutated Harness.Engine.dll: ids it does not hold are compile errors")
    a = ap.parse_args()
    if not os.path.isfile(a.source):
        print(f"mutants: {a.source}: no such file", file=sys.stderr)
        return 2
    mutants = from_report(a.source) if a.source.endswith(".json") else from_log(a.source)
    if a.assembly:
        image = open(a.assembly, "rb").read()
        for i, m in mutants.items():
            if not m["status"] and i >= 128 and (b"\x20" + i.to_bytes(4, "little", signed=True)) not in image:
                m["status"] = "compile-error"
    pattern = re.compile(a.file)
    for i in sorted(mutants):
        m = mutants[i]
        if m["path"] is None or not pattern.search(rel(m["path"])):
            continue
        if m["status"] and not a.all:
            continue
        squash = lambda s: " ".join(s.split())
        desc = f"{squash(m['orig'])[:160]} -> {squash(m['repl'])[:160]}"
        cols = [str(i), f"{rel(m['path'])}:{m['line']}", m["mutator"], desc] + ([m["status"]] if a.all else [])
        print("\t".join(cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
