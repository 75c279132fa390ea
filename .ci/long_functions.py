#!/usr/bin/env python3
"""Fails when a library function is longer than 80 lines.

A function runs from its `fn` line to the closing brace at its own
indentation; `#[cfg(test)] mod ...` blocks are left out (tests may be long),
and so are `tests/` folders. Usage: long_functions.py SRC_DIR...
"""
import os
import re
import sys

LIMIT = 80


def functions(path):
    lines = open(path).read().split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        if re.match(r"\s*#\[cfg\(test\)\]", line) and i + 1 < len(lines) and re.match(r"\s*mod ", lines[i + 1]):
            indent = len(lines[i + 1]) - len(lines[i + 1].lstrip())
            k = i + 2
            while k < len(lines) and not (lines[k].startswith(" " * indent + "}") and len(lines[k]) - len(lines[k].lstrip()) == indent):
                k += 1
            i = k + 1
            continue
        m = re.match(r"(\s*)(pub(\([a-z:]+\))? )?(const )?(async )?(unsafe )?(extern \"C\" )?fn ([a-z_0-9]+)", line)
        if m and not line.rstrip().endswith(";"):
            indent = len(m.group(1))
            k = i
            while k < len(lines) and not lines[k].rstrip().endswith("{"):
                k += 1
            end = k + 1
            while end < len(lines) and not (lines[end].startswith(" " * indent + "}") and len(lines[end]) - len(lines[end].lstrip()) == indent):
                end += 1
            yield m.group(8), i + 1, end - i + 1
        i += 1


long = []
for root in sys.argv[1:]:
    for folder, _, names in os.walk(root):
        if os.sep + "tests" in folder[len(root):]:
            continue
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(folder, name)
                long += [(n, path, f, at) for f, at, n in functions(path) if n > LIMIT]
for n, path, f, at in sorted(long, reverse=True):
    print(f"{path}:{at}: `{f}` is {n} lines (at most {LIMIT})")
sys.exit(1 if long else 0)
