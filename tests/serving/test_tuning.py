"""Serving performance settings: the transformer's Tuning, the Triton batching/thread config, the one-hop decode."""

from __future__ import annotations

import argparse
import asyncio
import base64
import json

import numpy as np
import pytest

from tailsynth.errors import ConfigError
from tailsynth.export import MODEL_NAME, parse_batch_sizes, reconfigure_repository, triton_config
from tailsynth.serve import tuning as tn
from tailsynth.serve.images import BadInput, Limits, decode_image

COMMON = {"classes": ["MEL", "NV"], "resolution": 28, "feature_dim": 512, "version": "abc"}


def test_tuning_round_trips_through_the_worker_command_line():
    t = tn.Tuning(decode_threads=3, jpeg_draft=True, request_logs=True, event_loop="asyncio",
                  http_parser="httptools", workers=4)
    p = argparse.ArgumentParser()
    tn.add_arguments(p)
    back = tn.from_namespace(p.parse_args(t.argv()))
    assert back == tn.Tuning(**{**t.as_dict(), "workers": 1})  # workers is the launcher's, not passed on
    assert tn.from_namespace(p.parse_args([])) == tn.Tuning()


@pytest.mark.parametrize("kw, words", [({"decode_threads": 0}, "decode_threads"), ({"workers": 0}, "workers"),
                                       ({"event_loop": "trio"}, "event_loop"), ({"http_parser": "x"}, "http_parser")])
def test_bad_tuning_is_refused_by_name(kw, words):
    with pytest.raises(ConfigError, match=words):
        tn.Tuning(**kw)


def test_tuning_convert():
    assert tn.convert("jpeg_draft", "off") is False and tn.convert("workers", "2") == 2
    with pytest.raises(ConfigError, match="nope"):
        tn.convert("nope", "1")
    with pytest.raises(ConfigError, match="request_logs"):
        tn.convert("request_logs", "maybe")


def test_local_batching_defaults_add_no_queue_delay():
    local = triton_config(target="local", **COMMON)
    assert "preferred_batch_size" not in local and "max_queue_delay_microseconds: 0" in local
    assert 'key: "intra_op_thread_count" value: { string_value: "0" }' in local
    assert 'key: "allow_spinning" value: { string_value: "0" }' in local
    cluster = triton_config(target="cluster", **COMMON)
    assert "preferred_batch_size: [ 8, 16, 32 ]" in cluster and "max_queue_delay_microseconds: 2000" in cluster
    assert "intra_op_thread_count" not in cluster
    tuned = triton_config(target="local", preferred_batch_sizes=(4, 64), max_queue_delay_us=300, max_batch_size=16,
                          instances=2, ort_threads=1, ort_spinning=True, **COMMON)
    assert "preferred_batch_size: [ 4 ]" in tuned and "max_queue_delay_microseconds: 300" in tuned
    assert "count: 2 kind: KIND_CPU" in tuned and 'string_value: "1" } }' in tuned
    with pytest.raises(ConfigError, match="instances"):
        triton_config(target="local", instances=0, **COMMON)


def test_parse_batch_sizes():
    assert parse_batch_sizes(None) is None
    assert parse_batch_sizes("none") == () and parse_batch_sizes("") == ()
    assert parse_batch_sizes("8,16,32") == (8, 16, 32) and parse_batch_sizes("8/16") == (8, 16)
    with pytest.raises(ConfigError, match="integers"):
        parse_batch_sizes("8,x")


def test_reconfigure_repository_writes_a_copy_and_leaves_the_source(tmp_path):
    src = tmp_path / "repo"
    (src / MODEL_NAME / "1").mkdir(parents=True)
    (src / MODEL_NAME / "1" / "model.onnx").write_bytes(b"onnx bytes")
    (src / MODEL_NAME / "serving.json").write_text(json.dumps(
        {"classes": ["MEL", "NV"], "resolution": 28, "feature_dim": 512, "model_version": "abc", "target": "local"}))
    original = triton_config(target="local", **COMMON)
    (src / MODEL_NAME / "config.pbtxt").write_text(original)
    out = reconfigure_repository(src, tmp_path / "v", instances=2, max_queue_delay_us=100)
    cfg = (out / MODEL_NAME / "config.pbtxt").read_text()
    assert cfg == triton_config(target="local", instances=2, max_queue_delay_us=100, **COMMON)
    assert (src / MODEL_NAME / "config.pbtxt").read_text() == original
    assert (out / MODEL_NAME / "1" / "model.onnx").read_bytes() == b"onnx bytes"
    with pytest.raises(ConfigError, match="exists"):
        reconfigure_repository(src, out)


class _Info:
    """Only describe(): preprocess never calls the predictor."""

    def describe(self):
        return {"classes": ["MEL", "NV"], "resolution": 32, "model_version": "abc"}

    async def predict(self, batch):
        raise AssertionError("preprocess called the predictor")


def _v1(images: list[bytes]) -> dict:
    return {"instances": [{"image_bytes": {"b64": base64.b64encode(b).decode()}} for b in images]}


@pytest.mark.parametrize("jpeg_draft", [True, False])
def test_preprocess_decodes_in_one_hop_and_in_the_heavy_lane_alike(isic_sample, jpeg_draft):
    from tailsynth.serve.transformer import TransformerCore

    files = sorted((isic_sample / "ISIC_2019_Training_Input").glob("*.jpg"))[:3]
    data = [f.read_bytes() for f in files]
    want = np.stack([decode_image(b, 32, jpeg_draft=jpeg_draft) for b in data])
    tuning = tn.Tuning(decode_threads=1, jpeg_draft=jpeg_draft)
    light = TransformerCore(_Info(), tuning=tuning)
    heavy = TransformerCore(_Info(), Limits(heavy_request_pixels=1), tuning=tuning)  # every request is "heavy"
    for core in (light, heavy):
        core.load()
        out = asyncio.run(core.preprocess(_v1(data), is_v2=False, headers={"x-request-id": "r1"}))
        assert np.array_equal(out["images"], want) and out["request_id"] == "r1"
        assert len(out["hashes"]) == 3 and out["hashes"][0] != out["hashes"][1]


def test_preprocess_names_the_bad_item_and_refuses_oversized_requests(isic_sample):
    from tailsynth.serve.transformer import TransformerCore

    good = next((isic_sample / "ISIC_2019_Training_Input").glob("*.jpg")).read_bytes()
    core = TransformerCore(_Info(), Limits(max_request_pixels=2 * 180 * 180))
    core.load()
    with pytest.raises(BadInput, match=r"instances\[1\]"):
        asyncio.run(core.preprocess(_v1([good, b"not an image"]), is_v2=False))
    with pytest.raises(BadInput, match="over the limit"):
        asyncio.run(core.preprocess(_v1([good] * 3), is_v2=False))
    out = asyncio.run(core.preprocess(_v1([good] * 2), is_v2=False))  # and the core still works
    assert out["images"].shape == (2, 32, 32, 3)


@pytest.mark.slow  # two transformer processes with the onnxruntime backend (~30 s on 2 cores)
def test_serve_workers_share_one_port(local_repo, server_cls, dermamnist_pngs, tmp_path):
    import re

    import serving_checks as chk

    from tailsynth.serve.local import listening_sockets

    s = server_cls(local_repo, "onnxruntime", "s3cret", tmp_path / "predictions.jsonl",
                   extra=("--workers", "2", "--request-logs")).wait_ready()
    try:
        assert listening_sockets(s.port) == 2
        for i in range(16):  # a new connection each time: the kernel spreads them over both sockets
            chk.predict_v1(s.url, [dermamnist_pngs[i % len(dermamnist_pngs)]], s.token)
        pids = set(re.findall(r"127\.0\.0\.1:\d+ (\d+) - \"POST /v1/models/", s.log()))
        assert len(pids) == 2, s.log()[-2000:]
        assert len((tmp_path / "predictions.jsonl").read_text().splitlines()) == 16  # both append, none lost
    finally:
        rc = s.stop()
    assert rc == 0 and listening_sockets(s.port) == 0, s.log()[-2000:]
