"""Nothing silently wrong between training and serving: a damaged checkpoint, NaN weights, an ONNX file or
config changed after export, a file slipped into a model folder, or a shipped synthesizer whose weights changed
are each refused with an error naming the file; a server that would reload changed bytes gives up instead."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tailsynth.classify.metadata import read_checkpoint
from tailsynth.classify.model import ClassifierMeta, build_backbone, save_classifier
from tailsynth.errors import DataError, MissingInputError
from tailsynth.serve.integrity import MANIFEST, verify_repository

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def small_model(tmp_path) -> Path:
    torch.manual_seed(0)
    net = build_backbone("test_resnet", 3)
    out = tmp_path / "m"
    save_classifier(net, out, backbone="test_resnet", classes=["NV", "DF", "VASC"], resolution=16)
    return out


def _overwrite(path: Path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_checkpoint_faults_are_named(small_model, tmp_path):
    pt = small_model / "model.pt"
    size = pt.stat().st_size
    read_checkpoint(small_model)  # the intact file loads
    # 4 KB of random bytes inside the tensor data, same size: the zip still opens, the checksum catches it
    raw = pt.read_bytes()
    damaged = tmp_path / "damaged" / "model.pt"
    damaged.parent.mkdir()
    damaged.write_bytes(raw)
    start = raw.find(b"data/0") + 2048
    _overwrite(damaged, start, np.random.default_rng(0).bytes(4096))
    assert damaged.stat().st_size == size
    with pytest.raises(DataError, match=f"{damaged}"):
        read_checkpoint(damaged)
    empty = tmp_path / "empty" / "model.pt"
    empty.parent.mkdir()
    empty.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty file \(0 bytes\)"):
        read_checkpoint(empty)
    cut = tmp_path / "cut" / "model.pt"
    cut.parent.mkdir()
    cut.write_bytes(raw[: size // 2])
    with pytest.raises(DataError, match=f"{cut}: not a readable classifier checkpoint"):
        read_checkpoint(cut)
    foreign = tmp_path / "foreign" / "model.pt"
    foreign.parent.mkdir()
    torch.save([1, 2, 3], foreign)
    with pytest.raises(DataError, match="not a tailsynth classifier checkpoint"):
        read_checkpoint(foreign)


def test_nan_weights_are_refused_by_export(tmp_path):
    from tailsynth.export import export_model

    net = build_backbone("test_resnet", 3)
    with torch.no_grad():
        next(iter(net.parameters()))[0].fill_(float("nan"))
    save_classifier(net, tmp_path / "nan", backbone="test_resnet", classes=["NV", "DF", "VASC"], resolution=16)
    first = next(iter(net.state_dict()))
    with pytest.raises(DataError, match=f"tensor '{first}' holds non-finite values"):
        export_model(tmp_path / "nan", tmp_path / "repo")
    assert not (tmp_path / "repo" / MANIFEST).exists()


def test_the_repository_manifest_catches_changed_and_added_files(small_model, tmp_path):
    from tailsynth.export import export_model, reconfigure_repository

    repo = tmp_path / "repo"
    res = export_model(small_model, repo)
    man = verify_repository(repo)
    assert man["model_version"] == res["model_version"]
    assert "lesion-classifier/1/model.onnx" in man["files"] and "preprocess/config.pbtxt" in man["files"]
    # a copy with other Triton settings gets its own manifest, and the source is left valid
    other = reconfigure_repository(repo, tmp_path / "other", instances=2)
    verify_repository(other)
    verify_repository(repo)

    onnx = repo / "lesion-classifier" / "1" / "model.onnx"
    original = onnx.read_bytes()
    _overwrite(onnx, len(original) // 2, np.random.default_rng(1).bytes(256))  # same size, other weights
    with pytest.raises(DataError, match=f"{onnx}: SHA-256 differs"):
        verify_repository(repo)
    onnx.write_bytes(original)
    verify_repository(repo)
    # a newer version folder would be what Triton serves
    extra = repo / "lesion-classifier" / "2" / "model.onnx"
    extra.parent.mkdir()
    extra.write_bytes(original)
    with pytest.raises(DataError, match=f"{extra}: not written by the export"):
        verify_repository(repo)
    shutil.rmtree(extra.parent)
    # the server's own files beside the model folders, and Python's bytecode caches, are not the export's
    (repo / "predictions.jsonl").write_text("{}\n")
    (repo / "preprocess" / "1" / "__pycache__").mkdir()
    (repo / "preprocess" / "1" / "__pycache__" / "model.cpython-311.pyc").write_bytes(b"x")
    verify_repository(repo)
    (repo / MANIFEST).unlink()
    with pytest.raises(MissingInputError, match="export the model again"):
        verify_repository(repo)


def test_serve_refuses_a_changed_repository(small_model, tmp_path):
    """The real command: it exits non-zero at once, naming the file, instead of serving other weights."""
    from tailsynth.export import export_model

    repo = tmp_path / "repo"
    export_model(small_model, repo)
    cfg = repo / "lesion-classifier" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("max_batch_size: 32", "max_batch_size: 31"))
    exe = shutil.which("tailsynth", path=str(ROOT / ".venv" / "bin")) or "tailsynth"
    from tailsynth.serve.ports import free_port

    r = subprocess.run([exe, "serve", "--repo", str(repo), "--backend", "onnxruntime", "--port", str(free_port())],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert f"{cfg}: SHA-256 differs" in r.stderr + r.stdout


def test_shipped_synthesizer_weights_are_checked(tmp_path):
    from tailsynth.diffusion.model import install_pretrained, load_model, verify_weights

    src = tmp_path / "synth"
    shutil.copytree(ROOT / "models" / "synth-dermamnist", src)
    assert verify_weights(src)  # the card's hash
    w = src / "unet" / "diffusion_pytorch_model.safetensors"
    _overwrite(w, w.stat().st_size - 4096, np.random.default_rng(2).bytes(512))
    with pytest.raises(DataError, match="weights hash .* differs from .* recorded in .*model_card.json"):
        load_model(src)
    (tmp_path / "dest").mkdir()
    with pytest.raises(DataError, match="weights hash"):
        install_pretrained(src, tmp_path / "dest")


@pytest.mark.triton
def test_supervisor_refuses_to_reload_changed_bytes(triton_env, local_repo, tmp_path, server_cls):
    """tritonserver dies; before starting a new one the launcher checks the repository again, finds the ONNX file
    changed, and exits non-zero instead of serving it."""
    repo = tmp_path / "repo"
    shutil.copytree(local_repo, repo, ignore=shutil.ignore_patterns("predictions.jsonl*", "__pycache__"))
    s = server_cls(repo, "triton", None, tmp_path / "p.jsonl").wait_ready()
    try:
        onnx = repo / "lesion-classifier" / "1" / "model.onnx"
        _overwrite(onnx, onnx.stat().st_size // 2, np.random.default_rng(3).bytes(256))
        triton = [int(p) for p in os.listdir("/proc") if p.isdigit() and _parent(int(p)) == s.proc.pid
                  and _name(int(p)).startswith("tritonserver")]
        assert len(triton) == 1
        os.kill(triton[0], signal.SIGKILL)
        s.proc.wait(timeout=90)
        assert s.proc.returncode != 0
        assert "refusing to reload the model" in s.log() and f"{onnx}: SHA-256 differs" in s.log()
    finally:
        s.stop()


def _stat(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "0 () Z 0"


def _parent(pid: int) -> int:
    st = _stat(pid)
    return int(st[st.rindex(")") + 2 :].split()[1])


def _name(pid: int) -> str:
    st = _stat(pid)
    return st[st.index("(") + 1 : st.rindex(")")]
