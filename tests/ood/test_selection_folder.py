"""The selection stage's folder (`Selection`): schema in the record, old records read as version 0, the gates'
record or another folder a clear error naming the file and the expected schema."""

import json

import numpy as np
import pytest

from tailsynth.errors import DataError
from tailsynth.ood.selection import SCHEMA, Selection


def _selection(root, n=2):
    (root / "cands").mkdir(parents=True)
    paths = []
    for i in range(n):
        p = root / "cands" / f"c{i}.png"
        p.write_bytes(b"png")
        paths.append(p)
    sel = Selection(root / "sel")
    sel.write_manifest(paths, ["DF"] * n, np.ones(n, bool), np.full(n, 0.5))
    sel.write_record({"selection": {"gamma": 0.5}, "per_class": {}})
    return sel


def test_written_selection_carries_schema_and_entries(tmp_path):
    sel = _selection(tmp_path)
    assert json.loads(sel.record_path.read_text())["schema"] == SCHEMA
    assert sel.record()["selection"] == {"gamma": 0.5}
    assert [(e.cls, e.weight) for e in sel.entries(check_images=True)] == [("DF", 0.5), ("DF", 0.5)]
    sel.localize()
    assert all(e.path.parent == sel.root / "images" for e in sel.entries(check_images=True))


def test_record_without_schema_is_version_0(tmp_path):
    sel = _selection(tmp_path)
    sel.record_path.write_text(json.dumps({"selection": {"gamma": 0.25}}))
    assert sel.record()["selection"]["gamma"] == 0.25


def test_gates_record_or_newer_schema_names_file_and_expected_schema(tmp_path):
    sel = _selection(tmp_path)
    sel.record_path.write_text(json.dumps({"format": "tailsynth-synth-quality/1", "gates": {}}))
    with pytest.raises(DataError, match=r"quality.json: schema 'tailsynth-synth-quality/1'; expected a selection "
                                        r"\(tailsynth.selection/1, written by `tailsynth select`\)"):
        sel.record()
    sel.record_path.write_text(json.dumps({"schema": "tailsynth.selection/9"}))
    with pytest.raises(DataError, match=r"schema 'tailsynth.selection/9'; expected a selection"):
        sel.record()


def test_candidate_folder_is_not_a_selection(tmp_path):
    folder = tmp_path / "gen"
    folder.mkdir()
    (folder / "manifest.csv").write_text("id,class\na,DF\n")
    with pytest.raises(DataError, match=r"selected_manifest.csv: no selected-synthetic manifest; expected a selection"):
        Selection(folder).entries()
    sel = _selection(tmp_path)
    sel.manifest_path.write_text("id,class\na,DF\n")
    with pytest.raises(DataError, match=r"selected_manifest.csv: missing column\(s\) 'path'"):
        sel.entries()
    (sel.root / "images").mkdir(exist_ok=True)
    sel.manifest_path.write_text(f"path,class\n{sel.root / 'images' / 'gone.png'},DF\n")
    with pytest.raises(DataError, match=r"selected_manifest.csv: row 2: image .*gone.png not found"):
        sel.entries(check_images=True)


def test_gate_run_reads_old_name_but_not_a_selection(tmp_path):
    """The gates' record moved to gates.json; an old gate folder still reads, a selection given instead does not."""
    from tailsynth.ood.gates import read_gates

    old = tmp_path / "old"
    old.mkdir()
    (old / "quality.json").write_text(json.dumps({"format": "tailsynth-synth-quality/1", "gates": {}, "config": {}}))
    assert read_gates(old)["gates"] == {}
    sel = _selection(tmp_path)
    with pytest.raises(DataError, match=r"quality.json: not a gate record; expected .*gates.json"):
        read_gates(sel.root)
