#!/usr/bin/env python3
"""Module and crate dependency graphs of the workspace; fails on a module cycle.

    scripts/module-graph.py            # check: exit 1 and print the cycles if any crate has one
    scripts/module-graph.py --mermaid  # print both graphs as Mermaid (docs/architecture.md)

A module's dependencies are the other modules of its crate it names through `crate::…` or
`super::…` paths (in `use` lines, inline, or in intra-doc links), resolved to the longest module path that
exists; a module naming its own submodules (or its parent naming it) is not a dependency.
Modules are files (`a.rs`, `a/mod.rs`) and inline `mod x { … }` blocks are folded into
their file. Crate dependencies come from each crate's Cargo.toml.
"""

import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CRATES = os.path.join(ROOT, "crates")

PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
GROUP = re.compile(r"\b(crate|super)::\{([^}]*)\}")


def modules_of(src):
    """Maps module path (tuple) -> file for every .rs file under src."""
    mods = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src)
            parts = rel[:-3].split(os.sep)
            if parts[-1] in ("mod", "lib", "main"):
                parts = parts[:-1]
            mods[tuple(parts)] = os.path.join(dirpath, f)
    return mods


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def resolve(mods, base, names):
    """The longest existing module path of base + names."""
    path = list(base)
    best = tuple(base)
    for n in names:
        path.append(n)
        if tuple(path) in mods:
            best = tuple(path)
        else:
            break
    return best


def edges_of(mods):
    edges = {m: set() for m in mods}
    for mod, file in mods.items():
        raw = open(file, encoding="utf-8").read()
        # Intra-doc links name modules too (a doc that points up the layers is a cycle).
        links = " ".join(re.findall(r"\[`((?:crate|super)(?:::\w+)+)`\]", raw))
        text = strip_comments(raw) + "\n" + links
        is_dir_mod = os.path.basename(file) in ("mod.rs", "lib.rs", "main.rs")
        # `super` of a file module is its parent; of a mod.rs, the parent's parent.
        parent = mod[:-1] if not is_dir_mod else mod[:-1]
        refs = []
        for m in PATH.finditer(text):
            refs.append((m.group(1), m.group(2).split("::")[1:]))
        for m in GROUP.finditer(text):
            for item in m.group(2).split(","):
                item = item.strip()
                if item and item != "self":
                    refs.append((m.group(1), item.split("::")))
        for kind, names in refs:
            base = () if kind == "crate" else parent
            while names and names[0] == "super":
                base, names = base[:-1], names[1:]
            target = resolve(mods, base, names)
            # Parents and children are one unit of code, not a dependency.
            if target == mod or target == mod[: len(target)] or mod == target[: len(mod)]:
                continue
            edges[mod].add(target)
    return edges


def cycles(edges):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

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
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def name(mod):
    return "::".join(mod) or "crate"


def crate_deps():
    deps = {}
    for crate in sorted(os.listdir(CRATES)):
        toml = os.path.join(CRATES, crate, "Cargo.toml")
        if not os.path.exists(toml):
            continue
        text = open(toml, encoding="utf-8").read()
        section = text.split("[dependencies]", 1)[-1].split("\n[", 1)[0]
        deps[crate] = sorted(set(re.findall(r"^(kalamdb-[a-z]+)", section, flags=re.M)))
    return deps


def main():
    mermaid = "--mermaid" in sys.argv
    failed = False
    if mermaid:
        print("```mermaid\nflowchart BT")
        for crate, ds in crate_deps().items():
            for d in ds:
                print(f"  {crate} --> {d}")
        print("```")
    for crate in sorted(os.listdir(CRATES)):
        src = os.path.join(CRATES, crate, "src")
        if not os.path.isdir(src):
            continue
        mods = modules_of(src)
        edges = edges_of(mods)
        found = cycles(edges)
        if mermaid:
            print(f"\n`{crate}`:\n\n```mermaid\nflowchart LR")
            for m in sorted(edges):
                for t in sorted(edges[m]):
                    print(f'  {name(m).replace("::", "_") or "crate"}["{name(m)}"] --> '
                          f'{name(t).replace("::", "_") or "crate"}["{name(t)}"]')
            print("```")
        for comp in found:
            failed = True
            print(f"{crate}: module cycle: " + " <-> ".join(name(m) for m in comp),
                  file=sys.stderr)
    if failed:
        sys.exit(1)
    if not mermaid:
        print("module graphs: no cycles")


if __name__ == "__main__":
    main()
