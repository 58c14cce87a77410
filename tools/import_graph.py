"""The import graph of the project, read from the code (every import statement, lazy ones inside functions
included), and the layer diagram docs/layers.mmd (Mermaid) made from it.

    python tools/import_graph.py            # rewrite docs/layers.mmd
    python tools/import_graph.py --check    # exit 1 when docs/layers.mmd is stale
    python tools/import_graph.py --packages # print the library's package graph; exit 1 on an arrow up or a cycle

Layers: the library (`tailsynth`, without its CLI) at the bottom; adapters above it: the CLI (`tailsynth.cli`),
the KFP components and pipelines, the serving entry points, the benchmarks. Dependencies point down only.

Inside the library, packages follow the data: data -> masks -> diffusion -> ood -> classify -> evaluation ->
export/serve/monitor (peers) -> report. A package imports only from itself, from an earlier package, or from the
base (the small top-level utility modules everyone uses); peers may import each other but never in a cycle. Where a
stage needs a later one's function (the synthesizer's gates need a classifier trainer), the adapter passes it in.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIAGRAM = ROOT / "docs" / "layers.mmd"
ADAPTER_PACKAGES = ("tailsynth.cli", "pipelines", "components", "serving", "benchmarks")
SOURCES = {"tailsynth": ROOT / "src" / "tailsynth", "pipelines": ROOT / "pipelines",
           "components": ROOT / "components", "serving": ROOT / "serving", "benchmarks": ROOT / "benchmarks"}


def module_name(path: Path, package: str, folder: Path) -> str:
    parts = [package, *path.relative_to(folder).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, module: str) -> set[str]:
    """Absolute names of every module imported anywhere in PATH (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out.update(f"{name}.{a.name}" for a in node.names)  # `from pkg import module`
    return out


def project_modules() -> dict[str, Path]:
    mods = {}
    for package, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            mods[module_name(path, package, folder)] = path
    return mods


def layer(module: str) -> str:
    for adapter in ADAPTER_PACKAGES:
        if module == adapter or module.startswith(adapter + "."):
            return adapter
    return "tailsynth" if module.split(".")[0] == "tailsynth" else ""


def edges() -> dict[tuple[str, str], set[str]]:
    """(importing module, imported project module) for every project-internal import."""
    mods = project_modules()
    found = {}
    for mod, path in mods.items():
        targets = {t for t in imports_of(path, mod) if t in mods}
        found[mod] = targets
    return found


def area(module: str) -> str:
    """A node of the diagram: a layer, or a library subpackage/module one level below `tailsynth`."""
    lay = layer(module)
    if lay != "tailsynth":
        return lay
    parts = module.split(".")
    return ".".join(parts[:2])


def wrong_way(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Library modules that import an adapter."""
    return sorted((m, t) for m, ts in graph.items() for t in ts if layer(m) == "tailsynth" and layer(t) != "tailsynth")


# The library's packages in the order the data flows; one tuple holds peers. Top-level modules name their tier:
# the base (utilities anyone may import) or the report tier at the top.
PACKAGE_ORDER: tuple[tuple[str, ...], ...] = (
    ("data",), ("masks",), ("diffusion",), ("ood",), ("classify",), ("evaluation",), ("export", "serve", "monitor"),
    ("report",))
BASE_MODULES = frozenset({"errors", "hashing", "metrics", "progress", "training", "formatting", "runinfo", "outdir",
                          "predictions", "onnx_session", "configfile", "stagefolder", "pages", "cards"})
REPORT_MODULES = frozenset({"lineage", "pipeline_io", "pipeline_report"})
BASE = "base"
RANK = {pkg: i for i, tier in enumerate(PACKAGE_ORDER) for pkg in tier} | {BASE: -1}


def package(module: str) -> str | None:
    """The package of a library module in PACKAGE_ORDER (or BASE); None outside the library or in its CLI."""
    if layer(module) != "tailsynth":
        return None
    parts = module.split(".")
    if len(parts) == 1 or parts[1] in BASE_MODULES:
        return BASE
    if parts[1] in REPORT_MODULES:
        return "report"
    if parts[1] not in RANK:
        raise ValueError(f"{module}: package {parts[1]!r} has no place in PACKAGE_ORDER (tools/import_graph.py)")
    return parts[1]


def package_edges(graph: dict[str, set[str]]) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """(importing package, imported package) -> the module imports behind that arrow."""
    out: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for m, ts in sorted(graph.items()):
        for t in sorted(ts):
            a, b = package(m), package(t)
            if a is not None and b is not None and a != b:
                out[(a, b)].append((m, t))
    return dict(out)


def upward(pkg_edges) -> list[tuple[str, str]]:
    """Arrows that run back up the order (to a later package); peers are checked by `package_cycles`."""
    return sorted((a, b) for a, b in pkg_edges if RANK[b] > RANK[a])


def package_cycles(pkg_edges) -> list[list[str]]:
    """Every strongly connected group of more than one package (Tarjan), each sorted: a cycle between packages."""
    succ: dict[str, list[str]] = defaultdict(list)
    for a, b in pkg_edges:
        succ[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted({p for e in pkg_edges for p in e}):
        if v not in index:
            visit(v)
    return sorted(found)


def package_report(graph: dict[str, set[str]]) -> tuple[str, int]:
    """The package graph as text (one arrow per line with its number of imports, wrong ones explained) and the
    number of problems (arrows up plus cycles)."""
    pe = package_edges(graph)
    up = upward(pe)
    cycles = package_cycles(pe)
    order = " -> ".join("/".join(t) for t in PACKAGE_ORDER)
    lines = [f"package order: {order} (all may import {BASE})"]
    for (a, b), imports in sorted(pe.items(), key=lambda kv: (RANK[kv[0][0]], kv[0][0], RANK[kv[0][1]], kv[0][1])):
        lines.append(f"  {a} -> {b}  ({len(imports)})" + ("  UP THE ORDER" if (a, b) in up else ""))
    for a, b in up:
        lines += [f"wrong way: {a} -> {b}: {m} imports {t}" for m, t in pe[(a, b)]]
    for c in cycles:
        lines.append("cycle between packages: " + " <-> ".join(c))
    lines.append("ok: no arrow runs back up the order and no packages form a cycle" if not (up or cycles)
                 else f"{len(up)} arrow(s) up the order, {len(cycles)} cycle(s)")
    return "\n".join(lines) + "\n", len(up) + len(cycles)


def diagram(graph: dict[str, set[str]]) -> str:
    links: dict[tuple[str, str], int] = defaultdict(int)
    for m, ts in graph.items():
        for t in ts:
            a, b = area(m), area(t)
            if a != b and a != "tailsynth" and b != "tailsynth":
                links[(a, b)] += 1
    lib = sorted({area(m) for m in graph if layer(m) == "tailsynth"} - {"tailsynth"})
    lines = ["%% Generated by tools/import_graph.py from the import statements; do not edit.",
             "flowchart TD"]
    for adapter in ADAPTER_PACKAGES:
        if any(layer(m) == adapter for m in graph):
            lines.append(f'    {adapter.replace(".", "_")}["{adapter}"]')
    lines.append('    subgraph library["library: src/tailsynth"]')
    lines += [f'        {a.replace(".", "_")}["{a}"]' for a in lib]
    lines.append("    end")
    for (a, b), n in sorted(links.items()):
        if layer(b) == "tailsynth" and layer(a) != "tailsynth":
            b = "library"  # adapters use the library as a whole
        lines.append(f"    {a.replace('.', '_')} --> {b.replace('.', '_')}")
    return "\n".join(dict.fromkeys(lines)) + "\n"


def main(argv: list[str]) -> int:
    graph = edges()
    if "--packages" in argv:
        text, problems = package_report(graph)
        print(text, end="")
        return 1 if problems else 0
    bad = wrong_way(graph)
    for m, t in bad:
        print(f"wrong-way import: {m} imports {t}", file=sys.stderr)
    text = diagram(graph)
    if "--check" in argv:
        if not DIAGRAM.is_file() or DIAGRAM.read_text() != text:
            print(f"{DIAGRAM} is stale: run python tools/import_graph.py", file=sys.stderr)
            return 1
        return 1 if bad else 0
    DIAGRAM.write_text(text)
    print(DIAGRAM)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
