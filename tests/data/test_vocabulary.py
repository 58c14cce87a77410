"""One tail-class vocabulary: `tailsynth.data.classes.TAIL_CLASSES`. No other module spells the set out again, and
the monitor's policy file (rendered into the CronJob's ConfigMap) names the same classes."""

import ast
from pathlib import Path

import yaml

from tailsynth.data.classes import TAIL_CLASSES

ROOT = Path(__file__).resolve().parents[2]


def _redeclarations(paths) -> list[str]:
    """Tuple/list/set literals of string constants equal (as a set) to the tail classes, outside data/classes.py."""
    found = []
    for path in paths:
        if path.name == "classes.py" and path.parent.name == "data":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and node.elts and all(
                    isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
                if {e.value for e in node.elts} == set(TAIL_CLASSES):
                    found.append(f"{path.name}:{node.lineno}")
    return found


def test_tail_classes_are_defined_once():
    code = [*ROOT.glob("src/tailsynth/**/*.py"), *ROOT.glob("pipelines/*.py"), *ROOT.glob("components/*.py")]
    assert len(code) > 50
    assert _redeclarations(code) == []


def test_the_check_finds_a_redeclaration(tmp_path):
    bad = tmp_path / "probe.py"
    bad.write_text('X = 1\nTAIL = ("AK", "VASC", "DF")\nOK = ("AK", "DF")\n')
    assert _redeclarations([bad]) == ["probe.py:2"]


def test_monitor_policy_names_the_tail_classes():
    policy = yaml.safe_load((ROOT / "k8s" / "monitor" / "monitor.yaml").read_text())
    assert policy["tail"]["classes"] == list(TAIL_CLASSES)  # same classes, same order


def test_monitor_policy_defaults_to_the_tail_classes():
    from tailsynth.data.classes import ISIC2019_CLASSES
    from tailsynth.monitor.policy import MonitorConfig, resolve_tail

    tail, basis = resolve_tail(MonitorConfig(), list(ISIC2019_CLASSES), None, None)
    assert set(tail) == set(TAIL_CLASSES) and "TAIL_CLASSES" in basis
