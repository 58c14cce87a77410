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
