"""Every stage file name is spelled in one module: the module of the stage that writes it (its owner). Every
other module, component and pipeline goes through the owner's constants and folder class.

A *use* is a string literal (or an f-string's literal part) that is the name, or a path ending in it. The stricter
textual check below also covers docstrings, comments, help texts and YAML: a plain grep for a name finds its owner
alone (prose elsewhere says what the file is or names the owner's constant; help texts are built from it).
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED = [ROOT / "src", ROOT / "components", ROOT / "pipelines"]

OWNERS = {
    # the generation stage: a candidate set
    "manifest.csv": "src/tailsynth/diffusion/candidate_set.py",
    "generation.json": "src/tailsynth/diffusion/candidate_set.py",
    "synthetic_ground_truth.csv": "src/tailsynth/data/isic.py",  # the ISIC layout a candidate set also carries
    # the selection stage
    "selected_manifest.csv": "src/tailsynth/ood/selection.py",
    "quality.json": "src/tailsynth/ood/selection.py",
    "scores.csv": "src/tailsynth/ood/selection.py",
    "scores_detail.csv": "src/tailsynth/ood/selection.py",
    # the synthesizer's quality gates
    "gates.json": "src/tailsynth/ood/gates.py",
    "gate_scores.csv": "src/tailsynth/ood/gates.py",
    # the synthesizer gate inside a pipeline run
    "synth_gate.json": "src/tailsynth/ood/synth_gate.py",
    # the classifier stage: a trained classifier and an evaluation
    "model.pt": "src/tailsynth/hashing.py",  # the base module that hashes it (classify may import base, not back)
    "metrics.json": "src/tailsynth/classify/folders.py",
    "evaluation.json": "src/tailsynth/classify/folders.py",
    "config.yaml": "src/tailsynth/classify/folders.py",
    "history.json": "src/tailsynth/classify/folders.py",
    "checkpoint.pt": "src/tailsynth/classify/folders.py",
    # experiments
    "results.json": "src/tailsynth/evaluation/results.py",
    "comparison.md": "src/tailsynth/evaluation/results.py",
    "comparison_runs.csv": "src/tailsynth/evaluation/quick.py",
    "comparison_summary.csv": "src/tailsynth/evaluation/quick.py",
    "comparison.json": "src/tailsynth/evaluation/quick.py",
    "replicate_quality.json": "src/tailsynth/evaluation/augment.py",
    # a run folder
    "run.yaml": "src/tailsynth/runinfo.py",
    "comparison.csv": "src/tailsynth/pipeline_report.py",
}


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _literals(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    skip = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            yield node.value


def _uses() -> dict[str, set[str]]:
    uses: dict[str, set[str]] = {name: set() for name in OWNERS}
    for top in SCANNED:
        for path in sorted(top.rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            for value in _literals(path):
                for name in OWNERS:
                    if value == name or value.endswith("/" + name):
                        uses[name].add(rel)
    return uses


USES = _uses()


@pytest.mark.parametrize("name", sorted(OWNERS))
def test_stage_file_name_is_spelled_only_by_its_owner(name):
    assert USES[name] == {OWNERS[name]}, (
        f"{name!r} is owned by {OWNERS[name]}; spelled in {sorted(USES[name])}: import the owner's constant or "
        "go through its folder class")


def _mentions() -> dict[str, set[str]]:
    """{name: files under SCANNED (.py, .yaml) whose text holds it as a whole word}, as `grep -rlw` would find it:
    `_` is a word character, so manifest.csv is not found inside selected_manifest.csv."""
    patterns = {name: re.compile(r"(?<!\w)" + re.escape(name) + r"(?!\w)") for name in OWNERS}
    found: dict[str, set[str]] = {name: set() for name in OWNERS}
    for top in SCANNED:
        for path in sorted(p for ext in ("*.py", "*.yaml") for p in top.rglob(ext)):
            text = path.read_text()
            rel = path.relative_to(ROOT).as_posix()
            for name, pattern in patterns.items():
                if pattern.search(text):
                    found[name].add(rel)
    return found


MENTIONS = _mentions()


@pytest.mark.parametrize("name", sorted(OWNERS))
def test_stage_file_name_is_mentioned_only_by_its_owner(name):
    assert MENTIONS[name] == {OWNERS[name]}, (
        f"{name!r} is owned by {OWNERS[name]}; mentioned in {sorted(MENTIONS[name] - {OWNERS[name]})}: in prose say "
        "what the file is or name the owner's constant; build help texts from the constant")
