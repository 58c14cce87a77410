"""`tailsynth serve` with the real tritonserver binary (nvidia-pytriton) behind the KServe transformer."""

from __future__ import annotations

import json
import subprocess

import pytest
import serving_checks as chk
from serving_checks import MAX_BODY, tailsynth_bin

pytestmark = pytest.mark.triton


def test_real_isic_jpegs_same_top1_as_torch(triton_server, torch_model, isic_images):
    chk.assert_same_as_torch(triton_server, torch_model, [p.read_bytes() for p in isic_images])


def test_dermamnist_pngs_same_top1_as_torch(triton_server, torch_model, dermamnist_pngs):
    chk.assert_same_as_torch(triton_server, torch_model, dermamnist_pngs)


def test_v2_binary_bytes_matches_v1(triton_server, dermamnist_pngs):
    chk.assert_v2_binary_matches_v1(triton_server, dermamnist_pngs[:5])


def test_survives_every_bad_input(triton_server):
    chk.assert_survives_bad_inputs(triton_server, chk.jpeg(0), MAX_BODY)


def test_records_and_loopback(triton_server, dermamnist_pngs):
    imgs = dermamnist_pngs[9:12]
    chk.predict_v1(triton_server.url, imgs, triton_server.token)
    chk.assert_records(triton_server.records, imgs)
    assert chk.listen_addresses(triton_server.port) == {"127.0.0.1"}
    assert "triton ready on http://127.0.0.1:" in triton_server.log()


def test_predict_cli_prints_one_line_per_image(triton_server, torch_model, isic_images):
    files = isic_images[:3]
    out = subprocess.run([tailsynth_bin(), "predict", "--url", triton_server.url, "--token", triton_server.token,
                          *map(str, files)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [x["image"] for x in lines] == [str(f) for f in files]
    want, _ = chk.local_top1(*torch_model, [f.read_bytes() for f in files])
    assert [x["class"] for x in lines] == want
    bad = subprocess.run([tailsynth_bin(), "predict", "--url", triton_server.url, str(files[0])],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "401" in bad.stderr


def test_concurrent_requests_get_their_own_answers(triton_server, torch_model, dermamnist_pngs):
    chk.assert_concurrent_answers_are_each_requests_own(triton_server, torch_model, dermamnist_pngs)


def test_v2_metadata_and_config_list_the_inputs_and_outputs(triton_server):
    """What a client discovers with tritonclient.http: send a BYTES `image`, get `probabilities` and `class`."""
    meta, config = chk.assert_metadata_lists_io(
        triton_server.url, triton_server.token, chk.MODEL, {"image": ("BYTES", [-1])},
        {"probabilities": ("FP32", [-1, 7]), "class": ("BYTES", [-1])})
    assert config["parameters"]["classes"]["string_value"].split(",")[:2] == ["MEL", "NV"]
