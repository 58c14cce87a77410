"""UNet runtimes (eager, channels_last, torch.compile, ONNX Runtime) give the eager fp32 images to float rounding.

The sampler runs a few DPM-Solver++ steps with guidance 3 (the shipped setting) on the same noise with each lever,
on a tiny untrained UNet; what is compared is the float image in [-1, 1] before quantization.
"""

import copy
import json

import numpy as np
import pytest

from tailsynth.diffusion.generate import GenerateConfig, generate, inpaint
from tailsynth.errors import ConfigError

TOL = 1e-3  # on [-1, 1] images: a quarter of one uint8 level (1/127.5)
R = 16


@pytest.fixture(scope="module")
def untrained():
    import torch
    from diffusers import DDPMScheduler

    from tailsynth.diffusion.model import build_unet

    torch.manual_seed(0)
    unet = build_unet("tiny", R, 7).eval()
    sched = DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction")
    rng = np.random.default_rng(0)
    bg = rng.integers(0, 256, (3, R, R, 3), dtype=np.uint8)
    mk = np.zeros((3, R, R), bool)
    mk[:, 4:12, 3:13] = True
    return unet, sched, (bg, mk, np.array([5, 6, 3]), [11, 12, 13])


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


def _sample(unet_or_runner, sched, inputs):
    bg, mk, labels, seeds = inputs
    return inpaint(unet_or_runner, sched, bg, mk, labels, seeds, 7, "dpmsolver", 3, 3.0, raw=True)


@pytest.fixture(scope="module")
def eager_images(untrained):
    unet, sched, inputs = untrained
    ref = _sample(unet, sched, inputs)
    # Not a vacuous comparison: most pixels are inside (-1, 1), not clamped, and sampling moved them.
    assert ref.dtype == np.float32 and (np.abs(ref) < 0.99).mean() > 0.5
    assert ref.std() > 0.05
    return ref


@pytest.mark.parametrize("runtime,channels_last", [
    ("eager", True),
    ("onnxruntime", False),
    pytest.param("compile", False, marks=pytest.mark.slow),  # inductor builds C++ kernels: a minute on 2 cores
    pytest.param("compile", True, marks=pytest.mark.slow),
])
def test_fp32_runtimes_match_eager(untrained, eager_images, cache, runtime, channels_last):
    from tailsynth.diffusion.runtime import UNetRunner

    unet, sched, inputs = untrained
    runner = UNetRunner(copy.deepcopy(unet), runtime, channels_last, cache_dir=cache)
    runner.warmup(8)  # compile: compiled for 8 rows, the sampler's 6 (3 images x cond/null) are padded up to it
    got = _sample(runner, sched, inputs)
    assert got.shape == eager_images.shape
    assert np.abs(got - eager_images).max() < TOL


@pytest.mark.slow
def test_compiled_code_reused_for_other_weights_stays_correct(untrained):
    """torch.compile caches compiled code per architecture and shape in the process (a second generate call
    reuses it); a UNet with other weights must still get its own outputs, not the first model's."""
    import torch

    from tailsynth.diffusion.runtime import UNetRunner

    unet = untrained[0]
    other = copy.deepcopy(unet)
    with torch.no_grad():
        other.conv_out.bias.add_(0.5)
    g = torch.Generator().manual_seed(1)
    x, t, y = torch.randn(4, 7, R, R, generator=g), torch.tensor(321), torch.tensor([0, 2, 5, 7])
    for m in (unet, other):
        runner = UNetRunner(copy.deepcopy(m), "compile")
        runner.warmup(4)
        with torch.inference_mode():
            got, want = runner(x, t, y), m(x, t, class_labels=y).sample
        assert (got - want).abs().max() < 1e-4
    assert (unet(x, t, class_labels=y).sample - other(x, t, class_labels=y).sample).abs().max() > 0.4


def test_bf16_is_measurably_different(untrained, eager_images):
    """bf16 autocast is a speed option whose outputs move beyond the fp32 tolerance: gates would need a re-run.
    (Also shows the tolerance above can fail.)"""
    from tailsynth.diffusion.runtime import UNetRunner

    unet, sched, inputs = untrained
    got = _sample(UNetRunner(copy.deepcopy(unet), "eager", precision="bf16"), sched, inputs)
    assert np.abs(got - eager_images).max() > TOL


def test_onnx_export_is_cached_by_weights(untrained, cache):
    import torch

    from tailsynth.diffusion.runtime import UNetRunner

    unet = untrained[0]
    a = UNetRunner(copy.deepcopy(unet), "onnxruntime", cache_dir=cache)
    path = a.info["onnx_path"]
    stamp = (cache / path.split("/")[-1]).stat().st_mtime_ns
    b = UNetRunner(copy.deepcopy(unet), "onnxruntime", cache_dir=cache)
    assert b.info["onnx_cached"] and b.info["onnx_path"] == path
    assert (cache / path.split("/")[-1]).stat().st_mtime_ns == stamp  # reused, not exported again
    assert b.info["onnx_parity_max_abs_diff"] < 1e-4

    other = copy.deepcopy(unet)
    with torch.no_grad():
        other.conv_out.bias.add_(0.5)
    # A stale graph under the new weights' name (e.g. a file copied by hand) fails the parity probe and is rebuilt.
    from tailsynth.diffusion.runtime import ONNX_OPSET, weights_key

    stale = cache / f"unet-{weights_key(other)}-opset{ONNX_OPSET}.onnx"
    stale.write_bytes((cache / path.split("/")[-1]).read_bytes())
    c = UNetRunner(other, "onnxruntime", cache_dir=cache)
    assert c.info["onnx_path"] == str(stale) and c.info["onnx_path"] != path
    assert c.info["onnx_parity_max_abs_diff"] < 1e-4
    # So is a truncated file (an interrupted copy).
    stale.write_bytes(stale.read_bytes()[:1000])
    d = UNetRunner(copy.deepcopy(other), "onnxruntime", cache_dir=cache)
    assert d.info["onnx_cached"] and d.info["onnx_parity_max_abs_diff"] < 1e-4


def test_generate_with_onnxruntime_matches_eager(tiny_model, tmp_path, cache):
    model, data = tiny_model
    opts = {"classes": "DF,VASC", "policy": "fixed", "count": 3, "sampler": "dpmsolver", "steps": 3,
            "guidance": 3.0, "batch_size": 2, "threads": 1}
    ea = generate(model, data, tmp_path / "eager", precision="fp32", **opts)  # auto may pick bf16 on this CPU
    ort = generate(model, data, tmp_path / "ort", runtime="onnxruntime", runtime_cache=str(cache), **opts)
    assert ort["n"] == ea["n"] == 6 and ort["runtime"]["runtime"] == "onnxruntime"
    assert ort["runtime"]["threads"] == 1
    assert json.loads((tmp_path / "ort" / "generation.json").read_text())["runtime"] == "onnxruntime"
    from tailsynth.data.isic import decode_file

    for p in sorted((tmp_path / "eager" / "images").iterdir()):
        a = decode_file(str(p)).astype(int)
        b = decode_file(str(tmp_path / "ort" / "images" / p.name)).astype(int)
        assert np.abs(a - b).max() <= 1  # equal up to the rounding of a float difference < TOL


def test_auto_precision_follows_the_cpu_and_is_recorded(tiny_model, tmp_path):
    from tailsynth.diffusion.runtime import native_bf16, resolve_precision

    want = "bf16" if native_bf16() else "fp32"
    assert resolve_precision("auto") == want and resolve_precision("auto", "onnxruntime") == "fp32"
    assert resolve_precision("fp32") == "fp32" and resolve_precision("auto", device_type="cuda") == "fp32"
    model, data = tiny_model
    res = generate(model, data, tmp_path / "g", classes="DF", policy="fixed", count=2, steps=2, batch_size=2, threads=1)
    assert res["runtime"]["precision"] == want and res["runtime"]["precision_requested"] == "auto"
    assert json.loads((tmp_path / "g" / "generation.json").read_text())["precision"] == want


@pytest.mark.parametrize("bad,match", [
    ({"runtime": "tensorrt"}, "tensorrt"),
    ({"runtime": "onnxruntime", "channels_last": True}, "channels_last"),
    ({"runtime": "onnxruntime", "precision": "bf16"}, "fp32"),
    ({"precision": "fp16"}, "fp16"),
    ({"threads": 0}, "threads"),
])
def test_bad_runtime_settings_are_named(bad, match):
    with pytest.raises(ConfigError, match=match):
        GenerateConfig(model="m", data="d", out="o", **bad)
