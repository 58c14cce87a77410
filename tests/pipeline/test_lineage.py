"""Lineage, end to end with the real stack at a tiny scale: diffusion model -> candidates -> OOD selection ->
augmented classifier -> export -> DVC versioning -> `tailsynth serve --backend onnxruntime` -> a prediction record
-> `tailsynth lineage --record` back to every synthetic image and its generation provenance."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from local_servers import stop_process
from typer.testing import CliRunner

from tailsynth.cli import app

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "lineage-test"


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_run import build_tiny_run

    return build_tiny_run(tmp_path_factory.mktemp("runs"))


def _served_record(repo: Path, records: Path, image: np.ndarray) -> str:
    """Classify IMAGE through `tailsynth serve --backend onnxruntime`; returns the record line it logged."""
    from PIL import Image

    from tailsynth.serve.ports import free_port, wait_http_ready

    port = free_port()
    exe = Path(sys.executable).parent / "tailsynth"
    cmd = [str(exe), "serve", "--repo", str(repo), "--backend", "onnxruntime", "--port", str(port),
           "--records", str(records), "--token", TOKEN]
    log = open(records.parent / "serve.log", "wb")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        wait_http_ready(f"http://127.0.0.1:{port}/v2/health/ready", proc, 120)
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        body = json.dumps({"instances": [{"image_bytes": {"b64": base64.b64encode(buf.getvalue()).decode()}}]})
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/models/lesion-classifier:predict",
                                     data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200
    finally:
        stop_process(proc, 30)
        log.close()
    lines = [ln for ln in records.read_text().splitlines() if ln.strip()]
    assert len(lines) == 1, (records.parent / "serve.log").read_text()[-3000:]
    return lines[0]


def test_lineage_from_a_served_prediction(run_folder, tmp_path):
    from tailsynth.data.versioning import data_revision, dvc_md5, run_versions
    from tailsynth.diffusion.model import model_hash
    from tailsynth.hashing import model_version

    f = run_folder
    image = np.load(f["npz"])["val_images"][0]
    line = _served_record(f["repo"], tmp_path / "predictions.jsonl", image)
    served_version = json.loads(line)["model_version"]
    assert served_version == model_version(f["augmented"])  # link 0: the record names the exported model

    r = CliRunner().invoke(app, ["lineage", "--record", line, "--runs", str(f["runs"]), "--json"])
    assert r.exit_code == 0, r.output
    chain = json.loads(r.output)
    # model version -> its model card, inside the run folder that exported it
    card_path = Path(chain["model"]["card"])
    assert card_path.is_relative_to(f["run"]) and json.loads(card_path.read_text())["version"] == served_version
    # -> the classifier run: the model folder whose weights hash to that version
    assert chain["classifier_run"]["run_dir"] == str(f["run"])
    assert Path(chain["classifier_run"]["model_dir"]) == f["augmented"].resolve()
    assert chain["classifier_run"]["verified"] is True
    # -> the synthetic set it trained on: its DVC revision, equal in the card, in run.yaml and in the bytes
    syn = chain["synthetic_set"]
    versions = run_versions(f["run"])
    assert syn["dvc_md5"] == dvc_md5(f["selected"]) == versions["sets"]["synthetic"]["md5"] == syn["run_yaml_revision"]
    assert syn["verified"] is True and Path(syn["dvc_file"]).is_file()
    assert syn["remote"] == versions["remote"]["url"]
    # -> the synthesizer: the diffusion model's weights hash and its card
    assert chain["synthesizer"]["hash"] == model_hash(f["diffusion"]) and chain["synthesizer"]["verified"] is True
    assert Path(chain["synthesizer"]["card"]) == f["diffusion"] / "tailsynth_diffusion.json"
    assert chain["selection"]["gamma"] == 0.67 and chain["selection"]["score"] == "mahalanobis"
    # -> the real data revision the classifier recorded, equal to the staged bytes' revision in run.yaml
    assert chain["real_data"]["revision"] == data_revision(f["npz"])
    assert chain["real_data"]["revision"] == versions["sets"]["real"]["content_revision"]
    assert chain["real_data"]["dvc_md5"] == versions["sets"]["real"]["md5"] and chain["real_data"]["verified"]
    # -> every synthetic image of each class, with its generation provenance row, byte-identical to the candidate
    with open(f["selected"] / "selected_manifest.csv", newline="") as fh:
        kept = list(csv.DictReader(fh))
    listed = {e["file"]: (cls, e) for cls, es in chain["images"].items() for e in es}
    assert sorted(listed) == sorted(row["path"] for row in kept) and kept
    with open(f["candidates"] / "manifest.csv", newline="") as fh:
        prov = {row["id"]: row for row in csv.DictReader(fh)}
    for row in kept:
        cls, e = listed[row["path"]]
        assert cls == row["class"] == e["class"]
        assert e["same_bytes_as_candidate"] is True
        assert {k: e[k] for k in prov[e["id"]]} == prov[e["id"]]
        assert e["model_hash"] == chain["synthesizer"]["hash"]

    text = CliRunner().invoke(app, ["lineage", "--model-version", served_version, "--runs", str(f["runs"])])
    assert text.exit_code == 0, text.output
    for needle in (served_version, syn["dvc_md5"], chain["synthesizer"]["hash"], chain["real_data"]["revision"],
                   "synthetic images of DF", "NOT VERIFIED"):
        assert (needle in text.output) == (needle != "NOT VERIFIED"), needle


def test_lineage_errors_name_what_is_missing(run_folder):
    r = CliRunner().invoke(app, ["lineage", "--model-version", "0123456789ab", "--runs", str(run_folder["runs"])])
    assert r.exit_code == 1 and "no exported model card with version 0123456789ab" in r.output
    r = CliRunner().invoke(app, ["lineage", "--record", '{"request_id": "x"}', "--runs", str(run_folder["runs"])])
    assert r.exit_code == 1 and "no model_version" in r.output
