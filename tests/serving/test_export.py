"""ONNX export, parity, model card and the Triton repository for both targets."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tailsynth.export import MODEL_NAME, export_model, triton_config


def test_local_repository_layout_and_card(local_repo, tiny_model):
    mdir = local_repo / MODEL_NAME
    assert (mdir / "1" / "model.onnx").is_file() and (mdir / "1" / "model.py").is_file()
    cfg = (mdir / "config.pbtxt").read_text()
    assert 'backend: "python"' in cfg and "max_batch_size: 32" in cfg and "dynamic_batching" in cfg
    assert (mdir / "embedding.npz").is_file()
    assert json.loads((mdir / "serving.json").read_text())["embedding_projection"] == "embedding.npz"
    assert (mdir / "labels.txt").read_text().split() == ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]
    card = json.loads((mdir / "model_card.json").read_text())
    assert card["intended_use"] == "research use, not for diagnosis"
    assert card["data_revision"] == "test-fixture" and card["per_class_metrics"]["NV"]["recall"] == 0.9
    assert card["onnx_parity"]["max_abs_diff_probabilities"] < 1e-4
    md = (mdir / "model_card.md").read_text()
    assert "not for diagnosis" in md and card["version"] in md and "| NV |" in md


def test_dynamic_batch_axis_and_parity_on_real_images(local_repo, torch_model, dermamnist_npz):
    import onnxruntime as ort

    from tailsynth.classify.model import predict_arrays
    from tailsynth.data.records import resize_rgb

    model, meta = torch_model
    sess = ort.InferenceSession(str(local_repo / MODEL_NAME / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].type == "tensor(uint8)"
    imgs = np.stack([resize_rgb(i, 32) for i in np.load(dermamnist_npz)["val_images"][:37]])
    for n in (1, 7, 37):  # batch sizes the export never saw
        p, f = sess.run(None, {"image": imgs[:n]})
        p_t, f_t, _ = predict_arrays(model, meta, imgs[:n], features=True)
        assert np.abs(f - f_t).max() < 1e-3
        assert p.shape == (n, 7) and f.shape == (n, 512)
        assert np.abs(p - p_t).max() < 1e-4
        assert (p.argmax(1) == p_t.argmax(1)).all()


def _parse_pbtxt(text: str) -> dict:
    # tritonclient's ModelConfig protobuf: run in a subprocess (tritonclient.grpc must not meet kserve in one process).
    code = ("import sys, json; from google.protobuf import text_format, json_format; "
            "from tritonclient.grpc import model_config_pb2 as m; "
            "c = text_format.Parse(sys.stdin.read(), m.ModelConfig()); print(json_format.MessageToJson(c))")
    out = subprocess.run([sys.executable, "-c", code], input=text, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_cluster_config_is_a_valid_triton_model_config():
    cfg = _parse_pbtxt(triton_config(classes=["MEL", "NV"], resolution=64, feature_dim=512, version="abc",
                                     target="cluster", tensorrt=True, instances=2))
    assert cfg["platform"] == "onnxruntime_onnx" and cfg["maxBatchSize"] == 32
    assert cfg["dynamicBatching"]["preferredBatchSize"] == [8, 16, 32]
    assert cfg["instanceGroup"][0] == {"count": 2, "kind": "KIND_GPU"}
    trt = cfg["optimization"]["executionAccelerators"]["gpuExecutionAccelerator"][0]
    assert trt["name"] == "tensorrt" and trt["parameters"]["precision_mode"] == "FP16"
    assert cfg["input"][0]["dims"] == ["64", "64", "3"] and cfg["input"][0]["dataType"] == "TYPE_UINT8"
    assert cfg["parameters"]["classes"]["stringValue"] == "MEL,NV"


def test_local_config_parses(local_repo):
    cfg = _parse_pbtxt((local_repo / MODEL_NAME / "config.pbtxt").read_text())
    assert cfg["backend"] == "python" and "optimization" not in cfg
    assert cfg["instanceGroup"][0]["kind"] == "KIND_CPU"


@pytest.mark.slow  # a second full ONNX export (~30 s on 2 busy cores); the cluster config itself is tested above
def test_cluster_target_via_cli(tiny_model, tmp_path):
    from serving_checks import tailsynth_bin

    out = subprocess.run([tailsynth_bin(), "export", "--model", str(tiny_model), "--out", str(tmp_path / "r"),
                          "--target", "cluster", "--tensorrt"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["parity"]["max_abs_diff_probabilities"] < 1e-4 and "max abs diff" in out.stderr
    mdir = tmp_path / "r" / MODEL_NAME
    assert not (mdir / "1" / "model.py").exists()
    assert 'platform: "onnxruntime_onnx"' in (mdir / "config.pbtxt").read_text()


def test_bad_arguments_are_named(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="target 'gpu'"):
        export_model(tiny_model, tmp_path / "r", target="gpu")
    with pytest.raises(FileNotFoundError, match="no classifier checkpoint"):
        export_model(tmp_path / "missing", tmp_path / "r")
