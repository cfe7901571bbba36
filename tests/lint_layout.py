#!/usr/bin/python3
"""The house rules of design.md §6 and doc/architecture.md, read from the code.

1. Stages: every `#include "..."` of agent/ and lib/ names a header of the
   including file's own stage or of a stage below it (STAGES, top first), and
   no two files of different folders include each other.
2. Size: no file in agent/ over MAX_FILE_LINES lines, no function over
   MAX_FUNCTION_LINES lines (a function is a line that opens with `{` in
   column 0 after its signature, up to the next `}` in column 0).
3. The map: doc/architecture.md's tree names every .c file of agent/ and
   lib/, so that it stays the map of the house.

Prints each breach and "lint-layout: N passed, M failed"; exits 1 on a breach.
"""
import os
import re
import sys

# Top first. A file may include headers of its own stage and of the stages
# after it. agent/config.h is the settings every stage reads: it includes
# only lib/, so it ranks just above lib/. agentctl/ is another program: it
# may include lib/ only.
STAGES = [
    ("main", ["agent/main.c"]),
    ("control", ["agent/control/"]),
    ("engine", ["agent/engine/"]),
    ("source", ["agent/source/"]),
    ("fleet", ["agent/fleet/"]),
    ("recipes", ["agent/recipes/"]),
    ("stack", ["agent/stack/"]),
    ("steps", ["agent/steps/"]),
    ("io", ["agent/io/"]),
    ("config", ["agent/config.c", "agent/config.h"]),
    ("lib", ["lib/"]),
]
AGENTCTL = "agent/agentctl/"
MAX_FILE_LINES = 900
MAX_FUNCTION_LINES = 120
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')


def stage_of(path):
    for rank, (name, prefixes) in enumerate(STAGES):
        for p in prefixes:
            if path == p or (p.endswith("/") and path.startswith(p)):
                return rank, name
    if path.startswith(AGENTCTL):
        return -1, "agentctl"
    return None, None


def resolve(src, inc):
    for base in (os.path.dirname(src), "lib", "agent"):
        cand = os.path.normpath(os.path.join(base, inc))
        if os.path.isfile(cand):
            return cand
    return None


def sources():
    for top in ("agent", "lib"):
        for dirpath, _, names in os.walk(top):
            for n in sorted(names):
                if n.endswith((".c", ".h")):
                    yield os.path.join(dirpath, n)


def functions(lines):
    """(name, first line, length) of each function body in a C file."""
    start = None
    for i, line in enumerate(lines):
        if line.startswith("{") and start is None:
            j = i - 1
            while j > 0 and "(" not in lines[j]:
                j -= 1
            m = re.search(r"(\w+)\s*\(", lines[j])
            start = (m.group(1) if m else "?", j)
        elif line.startswith("}") and start is not None:
            yield start[0], start[1] + 1, i - start[1] + 1
            start = None


def main():
    os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    bad = []
    folder_edges = set()
    checked = 0
    for src in sources():
        rank, name = stage_of(src)
        if rank is None:
            bad.append(f"{src}: in no stage of tests/lint_layout.py's STAGES")
            continue
        with open(src, encoding="utf-8") as f:
            lines = f.read().split("\n")
        for no, line in enumerate(lines, 1):
            m = INCLUDE.match(line)
            if not m:
                continue
            checked += 1
            hdr = resolve(src, m.group(1))
            if hdr is None:
                bad.append(f"{src}:{no}: includes \"{m.group(1)}\", found in neither agent/ nor lib/")
                continue
            hrank, hname = stage_of(hdr)
            if rank == -1:
                ok = hname in ("agentctl", "lib")
            else:
                ok = hrank is not None and hrank >= rank
            if not ok:
                bad.append(f"{src}:{no}: {name} includes {hdr} of {hname}, a stage above it")
            if hname != name:
                folder_edges.add((name, hname, src, hdr))
        if src.startswith("agent/"):
            if len(lines) - 1 > MAX_FILE_LINES:
                bad.append(f"{src}: {len(lines) - 1} lines, over {MAX_FILE_LINES}")
            for fn, first, length in functions(lines):
                if length > MAX_FUNCTION_LINES:
                    bad.append(f"{src}:{first}: function {fn} is {length} lines, over {MAX_FUNCTION_LINES}")
    with open("doc/architecture.md", encoding="utf-8") as f:
        doc = f.read()
    for src in sources():
        if src.endswith(".c") and not re.search(r"(^|\s)" + re.escape(os.path.basename(src)) + r"\s", doc, re.M):
            bad.append(f"{src}: not in doc/architecture.md's tree")
    pairs = {}
    for a, b, src, hdr in sorted(folder_edges):
        pairs.setdefault((a, b), (src, hdr))
    for (a, b), (src, hdr) in sorted(pairs.items()):
        if (b, a) in pairs and a < b:
            src2, hdr2 = pairs[(b, a)]
            bad.append(f"stages {a} and {b} include each other ({src} -> {hdr}, {src2} -> {hdr2})")
    for line in bad:
        print("lint-layout: " + line)
    print(f"lint-layout: {checked} includes checked, {0 if bad else 1} passed, {len(bad)} failed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
