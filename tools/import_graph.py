"""The import graph of the ``imagegen`` package, read from the source (ast; nothing is imported).

    python tools/import_graph.py            # modules, edges, cycles (one line each)
    python tools/import_graph.py --mermaid  # a mermaid diagram of the layers (docs/architecture.md)

Counts every import of the package's own modules, top-level and inside functions. A module's layer comes
from ``imagegen.LAYERS`` (the order written in ``src/imagegen/__init__.py``); tests/test_layers.py uses the same
functions.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, modules: set[str]) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for each import of a package module in ``path``."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    out = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend((a.name, child.lineno, in_function) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")
                    up = up[: len(up) - child.level + 1]
                    base = ".".join(up + ([child.module] if child.module else []))
                for a in child.names:  # 'from . import registry' imports the module imagegen.registry
                    full = f"{base}.{a.name}"
                    out.append((full if full in modules else base, child.lineno, in_function))
            visit(child, inner)

    visit(tree, False)
    return [(m, line, f) for m, line, f in out if m in modules]


def graph() -> dict[str, list[tuple[str, int, bool]]]:
    files = sorted((SRC / "imagegen").rglob("*.py"))
    modules = {module_name(p) for p in files}
    return {module_name(p): imports(p, modules) for p in files}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def strong(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
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
            strong(v)
    return sorted(out)


def layers() -> tuple:
    """``imagegen.LAYERS``, read from ``src/imagegen/__init__.py`` without importing the package."""
    tree = ast.parse((SRC / "imagegen" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "LAYERS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise SystemExit("src/imagegen/__init__.py defines no LAYERS")


def layer_of(module: str, table: tuple) -> int | None:
    """The layer of ``module``: the longest entry it is or lies under (the package root only by name)."""
    best, best_len = None, -1
    for i, (_, entries) in enumerate(table):
        for e in entries:
            hit = module == e or (e != "imagegen" and module.startswith(e + "."))
            if hit and len(e) > best_len:
                best, best_len = i, len(e)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mermaid", action="store_true", help="print the layers as a mermaid diagram")
    args = ap.parse_args()
    g = graph()
    edges = {m: {t for t, _, _ in imps if t != m} for m, imps in g.items()}
    n_edges = sum(len(v) for v in edges.values())
    # import statements (not names) of package modules that sit inside a function
    in_function = len({(m, line) for m, imps in g.items() for _, line, f in imps if f})
    if args.mermaid:
        table = layers()
        between: dict = {}
        for m, ts in edges.items():
            for t in ts:
                a, b = layer_of(m, table), layer_of(t, table)
                if a is not None and b is not None and a != b:
                    between[(a, b)] = between.get((a, b), 0) + 1
        print("flowchart BT")
        for i, (name, mods) in enumerate(table):
            short = ", ".join(m.removeprefix("imagegen.") if m != "imagegen" else "imagegen (namespace)"
                              for m in mods)
            print(f'  L{i}["{i}. {name}: {short}"]')
        for (a, b), k in sorted(between.items()):
            arrow = "-->" if a > b else "-.->"  # solid: imports a lower layer; dotted: a higher one (a break)
            print(f"  L{a} {arrow}|{k}| L{b}")
        return
    print(f"modules {len(g)}, edges {n_edges}, imports of package modules inside functions {in_function}")
    cyc = cycles(edges)
    print(f"cycles (strongly connected groups) {len(cyc)}")
    for c in cyc:
        print("  " + " <-> ".join(c))


if __name__ == "__main__":
    main()
