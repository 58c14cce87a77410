"""Dependencies point one way: the library (src/tailsynth without its CLI) never imports an adapter (the CLI,
pipelines, components, serving, benchmarks), not even lazily inside a function; the layer diagram in docs/ is
the one the code gives; the library finds nothing by path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))

import import_graph


def test_library_imports_no_adapter():
    assert import_graph.wrong_way(import_graph.edges()) == []


def test_a_wrong_way_import_is_caught(tmp_path):
    bad = tmp_path / "policy.py"
    bad.write_text("def run():\n    from ..cli.pipeline import run_pipeline\n    import pipelines.submit\n")
    found = import_graph.imports_of(bad, "tailsynth.monitor.policy")
    graph = {"tailsynth.monitor.policy": found & set(import_graph.project_modules())}
    assert import_graph.wrong_way(graph) == [("tailsynth.monitor.policy", "pipelines.submit"),
                                             ("tailsynth.monitor.policy", "tailsynth.cli.pipeline")]


def test_layer_diagram_is_current():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "import_graph.py"), "--check"], capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stderr


def test_library_finds_nothing_by_path():
    """No sys.path edits and no parents[N] lookups of the repository: the library works from a wheel."""
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "src").rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"sys\.path|parents\[", line)]
    assert hits == []


# ---- packages in the order the data flows ----------------------------------------------------------------------
def _graph_of(tmp_path, sources: dict[str, str]) -> dict[str, set[str]]:
    """The import graph of synthetic library modules (name -> source), as edges() reads the real tree."""
    known = set(import_graph.project_modules()) | set(sources)
    graph = {}
    for i, (mod, text) in enumerate(sources.items()):
        path = tmp_path / f"m{i}.py"
        path.write_text(text)
        graph[mod] = import_graph.imports_of(path, mod) & known
    return graph


def test_packages_follow_the_data():
    text, problems = import_graph.package_report(import_graph.edges())
    assert problems == 0, text


def test_package_graph_command_prints_the_graph():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "import_graph.py"), "--packages"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ood -> data" in proc.stdout and "no arrow runs back up" in proc.stdout


def test_an_import_up_the_order_is_caught_even_inside_a_function(tmp_path):
    graph = _graph_of(tmp_path, {"tailsynth.data.fake": "def f():\n    from ..classify.model import load_classifier\n"})
    text, problems = import_graph.package_report(graph)
    assert problems == 1
    assert "wrong way: data -> classify: tailsynth.data.fake imports tailsynth.classify.model" in text


def test_a_cycle_between_peer_packages_is_caught(tmp_path):
    graph = _graph_of(tmp_path, {"tailsynth.serve.fake": "from ..monitor import records\n",
                                 "tailsynth.monitor.fake": "def f():\n    import tailsynth.serve.images\n"})
    text, problems = import_graph.package_report(graph)
    assert import_graph.upward(import_graph.package_edges(graph)) == []  # peers: no arrow up, only the cycle
    assert problems == 1 and "cycle between packages: monitor <-> serve" in text


def test_a_package_outside_the_order_is_refused():
    import pytest

    with pytest.raises(ValueError, match="no place in PACKAGE_ORDER"):
        import_graph.package("tailsynth.newstage.thing")


def test_no_function_in_the_library_is_over_80_lines():
    """Issue 30's rule: a function that does not fit a screen does more than one thing."""
    import ast

    long = []
    for path in sorted((ROOT / "src").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert not long, long
