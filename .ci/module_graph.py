#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a cycle.

Every file is a module; `crate::a::b::Item` is an edge to the deepest module
file the path names (`a/b.rs`, else `a.rs`), `super::x` likewise. Test-only
code (`#[cfg(test)] mod ...` blocks) counts too: a unit test that reaches up
a layer couples the layers all the same. A module's use of its own
ancestors is not counted (children may use what their parent declares), so
a sibling reached through a parent's re-export goes unseen: inside the
crate, name a sibling by its own path (`crate::run::result::RunResult`, not
`crate::run::RunResult`).

Usage: module_graph.py SRC_DIR [--edges]
"""
import os
import re
import sys

root = sys.argv[1]
show = "--edges" in sys.argv

files = {}
for dp, _, fns in os.walk(root):
    for f in fns:
        if f.endswith(".rs"):
            p = os.path.join(dp, f)
            parts = os.path.relpath(p, root)[:-3].split("/")
            if parts[-1] == "mod":
                parts = parts[:-1]
            files[tuple(parts)] = p

def resolve(path):
    # The longest prefix of the path that is a module file.
    for n in range(len(path), 0, -1):
        if tuple(path[:n]) in files:
            return tuple(path[:n])
    return None

def strip(src):
    """The code without comments, strings and char literals."""
    out, i, n = [], 0, len(src)
    while i < n:
        c = src[i]
        if src.startswith("//", i):
            i = src.find("\n", i)
            i = n if i < 0 else i
        elif src.startswith("/*", i):
            j = src.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif re.match(r'b?r#*"', src[i:i + 12]) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            m = re.match(r'b?r(#*)"', src[i:])
            close = '"' + m.group(1)
            i = src.find(close, i + m.end()) + len(close)
            out.append('""')
        elif c == '"':
            i += 1
            while i < n and src[i] != '"':
                i += 2 if src[i] == "\\" else 1
            i += 1
            out.append('""')
        elif c == "'" and re.match(r"'(?:[^'\\]|\\[^']+)'", src[i:i + 12]):
            i += re.match(r"'(?:[^'\\]|\\[^']+)'", src[i:i + 12]).end()
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def uses(src):
    # crate::a::b and the groups of `use crate::{a::{b, c}, d}`.
    out = []
    for m in re.finditer(r"crate::((?:[a-z_][a-z0-9_]*::)*[a-z_][a-z0-9_]*)(?:::\{)?", src):
        out.append(m.group(1).split("::"))
    for m in re.finditer(r"use crate::\{", src):
        depth, i, start = 1, m.end(), m.end()
        while depth and i < len(src):
            depth += {"{": 1, "}": -1}.get(src[i], 0)
            i += 1
        body = src[start:i - 1]
        flat = re.sub(r"\{[^{}]*\}", "", re.sub(r"\{[^{}]*\}", "", body))
        for item in flat.split(","):
            item = item.strip().split(" as ")[0].rstrip(":")
            if item and item not in ("self",):
                out.append(item.split("::"))
    return out

# What the crate root re-exports (`pub use a::b::{C, D}`): a path
# `crate::C` is an edge to module `a::b`.
root_names = {}
lib = strip(open(files[("lib",)]).read()) if ("lib",) in files else ""
for m in re.finditer(r"pub use ((?:[a-z_][a-z0-9_]*::)+)(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)", lib):
    module = m.group(1).rstrip(":").split("::")
    if module[0] == "crate":
        module = module[1:]
    for name in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", m.group(2)):
        target = resolve(module)
        if target:
            root_names[name] = target

graph = {}
for mod, p in files.items():
    if mod == ("lib",):
        continue
    src = strip(open(p).read())
    deps = set()
    for path in uses(src):
        t = root_names.get(path[0]) if path[0][:1].isupper() else resolve(path)
        if t and t != mod and t != ("lib",) and not (len(t) < len(mod) and mod[: len(t)] == t):
            deps.add(t)
    for m in re.finditer(r"crate::([A-Z][A-Za-z0-9_]*)", src):
        t = root_names.get(m.group(1))
        if t and t != mod:
            deps.add(t)
    for m in re.finditer(r"super::([a-z_][a-z0-9_]*)", src):
        parent = list(mod[:-1])
        t = resolve(parent + [m.group(1)])
        if t and t != mod:
            deps.add(t)
    graph[mod] = deps

index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
sys.setrecursionlimit(10000)

def visit(v):
    index[v] = low[v] = counter[0]
    counter[0] += 1
    stack.append(v)
    on.add(v)
    for w in graph.get(v, ()):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on.discard(w)
            comp.append(w)
            if w == v:
                break
        sccs.append(comp)

for v in graph:
    if v not in index:
        visit(v)

name = lambda m: "::".join(m)
cycles = [c for c in sccs if len(c) > 1]
if show:
    for k in sorted(graph):
        print(name(k), "->", ", ".join(sorted(name(d) for d in graph[k])))
for c in cycles:
    print(f"cycle of {len(c)} modules:", ", ".join(sorted(name(m) for m in c)))
    for m in sorted(c):
        inside = sorted(name(d) for d in graph[m] if d in c)
        print(f"  {name(m)} -> {', '.join(inside)}")
sys.exit(1 if cycles else 0)
