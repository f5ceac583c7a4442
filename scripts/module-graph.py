#!/usr/bin/env python3
"""The import graph of the modules of one Rust crate, read from its source.

Usage: scripts/module-graph.py [SRC_DIR] [--dot]      (default: host/src)

A module is a file (`api/sessions.rs` is `api::sessions`, `api/mod.rs` is
`api`). An edge A -> B means that A names something of B through a
`crate::...`, `super::...` or `self::...` path, or a child module by name.
Prints, for each module, the modules it imports, grouped by the first part
of their path, then the import circles (strongly connected components with
more than one module). With --dot, prints the graph in Graphviz's format
instead. Exits 1 when there is a circle, so it can guard CI.
"""

import os
import re
import sys

PATH = re.compile(r"\b(crate|super|self)((?:::\w+)+)")
CHILD = re.compile(r"(?<![:\w])(\w+)::\w")
USE = re.compile(r"\buse\s+([^;]+);", re.S)


def module_of(src, path):
    parts = os.path.relpath(path, src)[:-3].split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def without_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def use_paths(tree):
    """`a::{b, c::{d}}` -> ['a::b', 'a::c::d']."""
    tree = re.sub(r"\s+", "", tree)
    out = []

    def walk(prefix, text):
        depth, start = 0, 0
        items = []
        for i, ch in enumerate(text):
            depth += ch == "{"
            depth -= ch == "}"
            if ch == "," and depth == 0:
                items.append(text[start:i])
                start = i + 1
        items.append(text[start:])
        for item in filter(None, items):
            if "{" in item:
                head, rest = item.split("{", 1)
                walk(prefix + head, rest[:-1])
            else:
                out.append(prefix + item.split(" as ")[0])

    walk("", tree)
    return out


def resolve(modules, here, path):
    segs = path.replace("::*", "").split("::")
    if segs[0] == "crate":
        base, segs = (), segs[1:]
    else:
        base = here
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                base = base[:-1]
            segs = segs[1:]
    target = base
    for seg in segs:
        if target + (seg,) not in modules:
            break
        target += (seg,)
    return target


def graph(src):
    files = {}
    for root, _, names in os.walk(src):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(root, name)
                files[module_of(src, path)] = path
    files = {m: p for m, p in files.items() if not m or m[0] != "bin"}
    edges = {m: set() for m in files}
    for here, path in files.items():
        with open(path, encoding="utf-8") as f:
            text = without_comments(f.read())
        paths = [p for tree in USE.findall(text) for p in use_paths(tree)]
        paths += [m.group(1) + m.group(2) for m in PATH.finditer(text)]
        # A child module named by its own name (`serve::run` in cli/mod.rs).
        paths += [
            "self::" + m.group(1) for m in CHILD.finditer(text) if here + (m.group(1),) in files
        ]
        for p in paths:
            if not p.startswith(("crate", "super", "self")):
                continue
            target = resolve(files, here, p)
            # Naming an ancestor (a re-export through mod.rs) ties nothing.
            if target != here and target != here[: len(target)]:
                edges[here].add(target)
    return edges


def circles(edges):
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
            if len(comp) > 1:
                found.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in edges:
        if v not in index:
            visit(v)
    return found


def name(module):
    return "::".join(module) or "crate"


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    src = args[0] if args else "host/src"
    edges = graph(src)
    if "--dot" in sys.argv:
        print("digraph modules {")
        for m in sorted(edges):
            for t in sorted(edges[m]):
                print(f'  "{name(m)}" -> "{name(t)}";')
        print("}")
    else:
        for m in sorted(edges):
            targets = sorted(name(t) for t in edges[m])
            print(f"{name(m)} -> {', '.join(targets) if targets else '(nothing)'}")
    found = circles(edges)
    for comp in found:
        print("circle: " + ", ".join(name(m) for m in comp), file=sys.stderr)
    print(f"modules: {len(edges)}, circles: {len(found)}", file=sys.stderr)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
