"""fetch: present files are used, missing ones download (from a real local HTTP server), offline fails clearly."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
import time
import zipfile

import pytest
from typer.testing import CliRunner

from tailsynth.cli import app
from tailsynth.data import DataError, load_source
from tailsynth.data.fetch import download, fetch


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"  # nothing listens after the socket closes: connection refused at once


@pytest.fixture
def http_mirror(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a folder (stopped after the test)."""
    root = tmp_path / "mirror"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        t.join(5)


def test_present_file_is_used_without_network(tiny_npz, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "dermamnist.npz").write_bytes(tiny_npz.read_bytes())
    rep = fetch("dermamnist", dest, base_url=_closed_port_url(), timeout=2)
    assert rep["files"]["dermamnist.npz"]["status"] == "present"
    assert load_source(rep["source"]).format == "medmnist"


def test_missing_file_offline_says_where_to_get_it(tmp_path):
    t = time.time()
    with pytest.raises(DataError) as e:
        fetch("dermamnist", tmp_path / "dest", base_url=_closed_port_url(), timeout=2)
    msg = str(e.value)
    assert str(tmp_path / "dest" / "dermamnist.npz") in msg and "medmnist.com" in msg and "Zenodo" in msg
    assert time.time() - t < 10
    assert not list((tmp_path / "dest").glob("*.part"))
    with pytest.raises(DataError, match="challenge.isic-archive.com"):
        fetch("isic2019", tmp_path / "isic", base_url=_closed_port_url(), timeout=2, labels_only=True)


def test_official_sources():
    # No network attempt here (a networked CI would really download): the file lists name the official hosts.
    from tailsynth.data.fetch import _dermamnist_files, _isic_files

    (npz,) = _dermamnist_files(None)
    assert npz.url.startswith("https://zenodo.org/records/") and npz.url.split("?")[0].endswith("/dermamnist.npz")
    assert npz.md5 == "0744692d530f8e62ec473284d019b0c7"
    names = {f.name: f for f in _isic_files(None, labels_only=False, with_test=True)}
    assert names["ISIC_2019_Training_Input.zip"].url == \
        "https://isic-challenge-data.s3.amazonaws.com/2019/ISIC_2019_Training_Input.zip"
    assert names["ISIC_2019_Training_Input.zip"].extract_to == "ISIC_2019_Training_Input"
    assert {"ISIC_2019_Training_GroundTruth.csv", "ISIC_2019_Training_Metadata.csv", "ISIC_2019_Test_Input.zip",
            "ISIC_2019_Test_Metadata.csv"} <= set(names)
    assert "ISIC_2019_Training_Input.zip" not in {f.name for f in _isic_files(None, True, False)}


def test_download_from_mirror(tiny_npz, http_mirror, tmp_path):
    root, url = http_mirror
    (root / "dermamnist.npz").write_bytes(tiny_npz.read_bytes())
    rep = fetch("dermamnist", tmp_path / "dest", base_url=url, timeout=5)
    assert rep["files"]["dermamnist.npz"]["status"] == "downloaded"
    assert (tmp_path / "dest" / "dermamnist.npz").read_bytes() == tiny_npz.read_bytes()
    # the second call finds it present
    assert fetch("dermamnist", tmp_path / "dest", base_url=url)["files"]["dermamnist.npz"]["status"] == "present"


def test_isic_download_and_extract(tiny_isic, http_mirror, tmp_path):
    root, url = http_mirror
    for name in ("ISIC_2019_Training_GroundTruth.csv", "ISIC_2019_Training_Metadata.csv"):
        (root / name).write_bytes((tiny_isic / name).read_bytes())
    with zipfile.ZipFile(root / "ISIC_2019_Training_Input.zip", "w") as z:
        for p in sorted((tiny_isic / "ISIC_2019_Training_Input").iterdir()):
            z.write(p, f"ISIC_2019_Training_Input/{p.name}")
    dest = tmp_path / "fetched"
    rep = fetch("isic2019", dest, base_url=url, timeout=5)
    assert {f["status"] for f in rep["files"].values()} == {"downloaded"}
    assert not (dest / "ISIC_2019_Training_Input.zip").exists()  # archive removed after extraction
    assert load_source(dest).stats()["splits"] == load_source(tiny_isic).stats()["splits"]
    from tailsynth.data.validate import validate_source

    assert validate_source(dest).ok


def test_md5_mismatch_rejected(http_mirror, tmp_path):
    root, url = http_mirror
    (root / "f.bin").write_bytes(b"payload")
    with pytest.raises(DataError, match="MD5"):
        download(f"{url}/f.bin", tmp_path / "f.bin", md5="0" * 32)
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()
    good = hashlib.md5(b"payload").hexdigest()
    assert download(f"{url}/f.bin", tmp_path / "f.bin", md5=good).read_bytes() == b"payload"


def test_cli_fetch_offline_exit_code(tmp_path):
    res = CliRunner().invoke(app, ["data", "fetch", "dermamnist", "--dest", str(tmp_path),
                                   "--base-url", _closed_port_url(), "--timeout", "2"])
    assert res.exit_code == 1
    assert "dermamnist.npz" in res.stderr and "medmnist" in res.stderr
    res = CliRunner().invoke(app, ["data", "fetch", "cifar10", "--dest", str(tmp_path)])
    assert res.exit_code == 1 and "unknown dataset" in res.stderr
