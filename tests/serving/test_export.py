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


# --- the ensemble (lesion-classifier-e2e) written beside the model ---

def test_ensemble_layout_beside_the_model(local_repo):
    from tailsynth.export import ENSEMBLE_NAME, POSTPROCESS_NAME, PREPROCESS_NAME

    for name in (PREPROCESS_NAME, POSTPROCESS_NAME):
        vdir = local_repo / name / "1"
        assert (vdir / "model.py").is_file() and (vdir / "tailsynth" / "serve" / "images.py").is_file()
    assert (local_repo / POSTPROCESS_NAME / "embedding.npz").is_file()  # records carry the monitoring embedding
    assert (local_repo / ENSEMBLE_NAME / "1").is_dir() and not any((local_repo / ENSEMBLE_NAME / "1").iterdir())
    assert json.loads((local_repo / MODEL_NAME / "serving.json").read_text())["ensemble"] == ENSEMBLE_NAME


def test_ensemble_configs_are_valid_triton_model_configs(local_repo):
    from tailsynth.export import ENSEMBLE_NAME, POSTPROCESS_NAME, PREPROCESS_NAME

    pre = _parse_pbtxt((local_repo / PREPROCESS_NAME / "config.pbtxt").read_text())
    # Batched steps: the dynamic batcher hands a stub every queued request in one call (export.py says why).
    assert pre["backend"] == "python" and pre["maxBatchSize"] == 32 and "dynamicBatching" in pre
    assert pre["input"][0] == {"name": "image", "dataType": "TYPE_STRING", "dims": ["1"]}
    assert {o["name"]: o["dims"] for o in pre["output"]} == {"pixels": ["32", "32", "3"], "image_sha256": ["1"]}
    assert pre["parameters"]["max_request_pixels"]["stringValue"] == "64000000"
    assert pre["instanceGroup"][0] == {"count": 2, "kind": "KIND_CPU"}
    post = _parse_pbtxt((local_repo / POSTPROCESS_NAME / "config.pbtxt").read_text())
    assert [i["name"] for i in post["input"]] == ["probabilities", "features", "pixels", "image_sha256"]
    assert post["maxBatchSize"] == 32 and "dynamicBatching" in post
    ens = _parse_pbtxt((local_repo / ENSEMBLE_NAME / "config.pbtxt").read_text())
    assert ens["platform"] == "ensemble" and ens["maxBatchSize"] == 32
    assert ens["input"] == [{"name": "image", "dataType": "TYPE_STRING", "dims": ["1"]}]
    assert [(o["name"], o["dataType"]) for o in ens["output"]] == [
        ("probabilities", "TYPE_FP32"), ("class", "TYPE_STRING"), ("request_id", "TYPE_STRING")]
    steps = ens["ensembleScheduling"]["step"]
    assert [s["modelName"] for s in steps] == [PREPROCESS_NAME, MODEL_NAME, POSTPROCESS_NAME]
    assert steps[1]["inputMap"] == {"image": "pixels"}
    assert ens["parameters"]["classes"]["stringValue"] == "MEL,NV,BCC,AK,BKL,DF,VASC"
    # Every tensor a step reads is the ensemble's input or another step's output.
    produced = {"image"} | {v for s in steps for v in s["outputMap"].values()}
    assert {v for s in steps for v in s["inputMap"].values()} <= produced


def test_vendored_library_imports_on_its_own(local_repo, tmp_path):
    """The preprocess/postprocess copies of the library import without an installed tailsynth (a Triton image)."""
    from tailsynth.export import POSTPROCESS_NAME, PREPROCESS_NAME

    for name in (PREPROCESS_NAME, POSTPROCESS_NAME):
        vdir = local_repo / name / "1"
        code = ("import sys; sys.path[:0] = [sys.argv[1]]; "
                "import tailsynth.serve.images as i, tailsynth.serve.records as r; "
                "assert i.__file__.startswith(sys.argv[1]) and r.__file__.startswith(sys.argv[1]), i.__file__; "
                "import tailsynth.predictions as p; "
                "print(sorted(p.image_statistics(__import__('numpy').zeros((32, 32, 3), 'uint8'))))")
        # -S: no site-packages .pth files, so the editable install of tailsynth cannot be what is imported.
        site = [p for p in sys.path if p.endswith("site-packages")]
        out = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path += {site!r}; " + code, str(vdir)],
                             capture_output=True, text=True, timeout=60, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        assert "sharpness" in out.stdout  # the statistics the monitor's reference holds
