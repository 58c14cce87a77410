"""Image validation limits and prediction records (no server)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import serving_checks as chk

from tailsynth.serve.images import BadInput, Limits, decode_image
from tailsynth.serve.records import JsonlSink, prediction_record, read_records


def test_exact_decode_is_the_training_reader(isic_sample):
    from PIL import Image

    from tailsynth.data.records import resize_rgb

    f = next((isic_sample / "ISIC_2019_Training_Input").glob("*.jpg"))
    got = decode_image(f.read_bytes(), 32, f.name, jpeg_draft=False)
    assert got.shape == (32, 32, 3) and got.dtype == np.uint8
    assert np.array_equal(got, resize_rgb(np.asarray(Image.open(f).convert("RGB")), 32))


@pytest.mark.parametrize("resolution", [28, 32, 64])
def test_draft_decode_is_close_to_the_exact_decode(isic_sample, resolution):
    """JPEG DCT scaling (the opt-in `--jpeg-draft` lever) changes pixels by about half a grey level: same size, close values, and
    really a different path (identical output everywhere would mean the draft never happened)."""
    files = sorted((isic_sample / "ISIC_2019_Training_Input").glob("*.jpg"))[::40][:30]
    diffs = []
    for f in files:
        data = f.read_bytes()
        fast, exact = decode_image(data, resolution, jpeg_draft=True), decode_image(data, resolution)
        assert fast.shape == exact.shape == (resolution, resolution, 3) and fast.dtype == np.uint8
        diffs.append(np.abs(fast.astype(np.int16) - exact.astype(np.int16)))
    d = np.stack(diffs)
    assert d.mean() < 1.5, d.mean()
    assert np.percentile(d, 99) <= 6
    assert d.reshape(len(files), -1).mean(1).max() < 3  # no single image is far off
    assert d.max() > 0


def test_draft_leaves_non_jpeg_and_small_jpeg_exact():
    from PIL import Image

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    for fmt in ("PNG", "JPEG"):  # a 40 px JPEG cannot be scaled down by 2 and stay >= 32 px
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format=fmt)
        assert np.array_equal(decode_image(buf.getvalue(), 32), decode_image(buf.getvalue(), 32, jpeg_draft=False))


@pytest.mark.parametrize("data, words", [
    (b"", "empty image"),
    (b"GIF89a" + b"\0" * 100, "not a decodable image"),
    (b"hello world", "not a decodable image"),
    (chk.bomb_png(), "decompression bomb"),
    (chk.bomb_png(5000, 5000), None),  # within 40 Mpx but a lying header: must fail cleanly, not crash
])
def test_bad_images_are_refused_with_the_item_named(data, words):
    with pytest.raises(BadInput) as e:
        decode_image(data, 32, "instances[3]")
    assert "instances[3]" in str(e.value)
    if words:
        assert words in str(e.value)


def test_truncated_and_oversize():
    jp = chk.jpeg(0, 128)
    with pytest.raises(BadInput, match="truncated"):
        decode_image(jp[: len(jp) // 3], 32)
    with pytest.raises(BadInput, match="exceeds the limit of 1000 bytes"):
        decode_image(jp, 32, limits=Limits(max_image_bytes=1000))
    with pytest.raises(BadInput, match="64x64 pixels exceeds"):
        decode_image(chk.jpeg(0, 64), 32, limits=Limits(max_pixels=4000))


def test_gif_is_not_an_accepted_format():
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="GIF")
    with pytest.raises(BadInput, match="format GIF not accepted"):
        decode_image(buf.getvalue(), 32)


def test_records_round_trip(tmp_path):
    sink = JsonlSink(tmp_path / "p" / "r.jsonl")
    recs = [prediction_record(request_id="r1", image_sha256="ab" * 32, predicted_class="NV",
                              probabilities={"NV": 0.9, "MEL": 0.1}, model_version="v1", embedding=[0.5, 1.0],
                              image_stats={"brightness": 3.0})]
    sink.write(recs)
    sink.write([])
    back = read_records(tmp_path / "p" / "r.jsonl")
    assert back == recs and back[0]["timestamp"].endswith("Z")
    assert back[0]["image_hash"] == "ab" * 32 and back[0]["predicted"] == "NV" and back[0]["confidence"] == 0.9


def test_jsonl_sink_writes_whole_lines_from_threads_and_sinks_and_follows_rotation(tmp_path):
    import json as _json
    from concurrent.futures import ThreadPoolExecutor

    from tailsynth.serve.records import JsonlSink

    path = tmp_path / "r" / "predictions.jsonl"
    a, b = JsonlSink(path), JsonlSink(path)  # two writers on one file, as two transformer processes have
    pad = "x" * 5000  # batches of records larger than a stdio buffer: one write() each, never split

    def write(i):
        (a if i % 2 else b).write([{"i": i, "k": k, "pad": pad} for k in range(3)])

    with ThreadPoolExecutor(8) as ex:
        list(ex.map(write, range(40)))
    lines = path.read_text().splitlines()
    assert len(lines) == 120
    got = [_json.loads(x) for x in lines]  # every line parses: nothing interleaved
    assert sorted((r["i"], r["k"]) for r in got) == [(i, k) for i in range(40) for k in range(3)]

    path.rename(tmp_path / "r" / "predictions.jsonl.1")  # rotated away: the next write starts a new file
    a.write([{"i": "after"}])
    assert [_json.loads(x)["i"] for x in path.read_text().splitlines()] == ["after"]
    assert len((tmp_path / "r" / "predictions.jsonl.1").read_text().splitlines()) == 120
    a.close()
    a.write([{"i": "reopened"}])
    assert path.read_text().splitlines()[-1] == '{"i":"reopened"}'


def test_request_ids_are_unique_and_short():
    from tailsynth.serve.transformer import new_request_id, sanitize_request_id

    ids = {new_request_id() for _ in range(10000)}
    assert len(ids) == 10000
    assert all(sanitize_request_id(i) == i and len(i) <= 32 for i in list(ids)[:50])
