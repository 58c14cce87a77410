"""The generation stage's folder (`CandidateSet`): schema in the record, old folders read as version 0, foreign
or newer folders a clear error naming the file and the expected schema, and the one merge."""

import json

import numpy as np
import pytest

from tailsynth.diffusion.candidate_set import (
    MANIFEST_COLUMNS,
    SCHEMA,
    CandidateSet,
    merge_candidate_sets,
    write_candidate_set,
)
from tailsynth.errors import DataError


def _folder(root, ids_classes, settings=None, record=True):
    from tailsynth.diffusion.outputs import save_png

    (root / "images").mkdir(parents=True)
    rows = []
    for k, (iid, cls) in enumerate(ids_classes):
        save_png(np.full((8, 8, 3), 10 * k, np.uint8), root / "images" / f"{iid}.png")
        rows.append({**dict.fromkeys(MANIFEST_COLUMNS, ""), "id": iid, "class": cls, "index": k, "model_hash": "abc"})
    write_candidate_set(root, rows, MANIFEST_COLUMNS, settings or {"model": "m", "classes": ["DF"]})
    if not record:
        (root / "generation.json").unlink()
    return CandidateSet(root)


def test_written_set_carries_schema_and_reads_typed_rows(tmp_path):
    cs = _folder(tmp_path / "g", [("syn_DF_0", "DF"), ("syn_DF_1", "DF")])
    assert json.loads(cs.record_path.read_text())["schema"] == SCHEMA
    assert cs.schema_version() == 1
    rows = cs.validate()
    assert [(r.id, r.cls) for r in rows] == [("syn_DF_0", "DF"), ("syn_DF_1", "DF")]
    assert np.isnan(rows[0].source_rms)
    assert cs.model_hashes() == ["abc"]


def test_old_folders_read_as_version_0(tmp_path):
    """Written before the record had a schema (or without a record, as hand-made sets): read when columns match."""
    cs = _folder(tmp_path / "g", [("a", "DF")])
    rec = json.loads(cs.record_path.read_text())
    del rec["schema"]
    cs.record_path.write_text(json.dumps(rec))
    assert cs.schema_version() == 0 and [r.id for r in cs.read()] == ["a"]
    bare = _folder(tmp_path / "h", [("b", "VASC")], record=False)
    assert bare.schema_version() == 0 and [r.cls for r in bare.read()] == ["VASC"]


@pytest.mark.parametrize("schema", ["tailsynth.candidate-set/2", "tailsynth-synth-quality/1"])
def test_foreign_or_newer_record_names_file_and_schema(tmp_path, schema):
    cs = _folder(tmp_path / "g", [("a", "DF")])
    cs.record_path.write_text(json.dumps({"schema": schema}))
    with pytest.raises(DataError, match=rf"generation.json: schema '{schema}'; expected a candidate set "
                                        rf"\({SCHEMA}"):
        cs.read()


def test_foreign_manifest_and_selection_folder_are_clear_errors(tmp_path):
    cs = _folder(tmp_path / "g", [("a", "DF")])
    cs.manifest_path.write_text("path,class\nx.png,DF\n")
    with pytest.raises(DataError, match=r"manifest.csv: missing column\(s\) 'id' .*expected a candidate set"):
        cs.read()
    sel = tmp_path / "selected"
    sel.mkdir()
    (sel / "selected_manifest.csv").write_text("path,class\nx.png,DF\n")
    with pytest.raises(DataError, match=r"manifest.csv: not found .*expected a candidate set.*selected_manifest.csv"):
        CandidateSet(sel).read()


def test_missing_image_is_named(tmp_path):
    cs = _folder(tmp_path / "g", [("a", "DF"), ("b", "DF")])
    (cs.images_dir / "b.png").unlink()
    with pytest.raises(DataError, match=r"b.png: candidate image missing \(1 of 2"):
        cs.validate()


def test_merge_of_parts_keeps_order_and_records_each(tmp_path):
    a = _folder(tmp_path / "a", [("syn_DF_0", "DF")], {"model": "m", "classes": ["DF"], "count": 1})
    b = _folder(tmp_path / "b", [("syn_VASC_0", "VASC")], {"model": "m", "classes": ["VASC"], "count": 1})
    merge_candidate_sets([a.root, b.root], tmp_path / "m", shards=False)
    m = CandidateSet(tmp_path / "m")
    assert [r.id for r in m.validate()] == ["syn_DF_0", "syn_VASC_0"]
    rec = m.record()
    assert rec["schema"] == SCHEMA and rec["model"] == "m" and "classes" not in rec
    assert [p["classes"] for p in rec["parts"]] == [["DF"], ["VASC"]]
    with pytest.raises(DataError, match="generation settings differ .* in classes"):
        merge_candidate_sets([a.root, b.root], tmp_path / "m2")
