"""The pure-Python fallback endpoint (`tailsynth serve --backend onnxruntime`): contract and hardening."""

from __future__ import annotations

import serving_checks as chk
from serving_checks import MAX_BODY


def test_real_isic_jpegs_same_top1_as_torch(ort_server, torch_model, isic_images):
    chk.assert_same_as_torch(ort_server, torch_model, [p.read_bytes() for p in isic_images])


def test_dermamnist_pngs_same_top1_as_torch(ort_server, torch_model, dermamnist_pngs):
    chk.assert_same_as_torch(ort_server, torch_model, dermamnist_pngs)


def test_v2_binary_bytes_matches_v1(ort_server, dermamnist_pngs):
    chk.assert_v2_binary_matches_v1(ort_server, dermamnist_pngs[:5])


def test_survives_every_bad_input(ort_server):
    chk.assert_survives_bad_inputs(ort_server, chk.jpeg(0), MAX_BODY)


def test_one_record_per_image_hash_only(ort_server, dermamnist_pngs):
    imgs = dermamnist_pngs[5:9]
    chk.predict_v1(ort_server.url, imgs, ort_server.token)
    chk.assert_records(ort_server.records, imgs)


def test_binds_loopback_only(ort_server):
    assert chk.listen_addresses(ort_server.port) == {"127.0.0.1"}


def test_concurrent_requests_get_their_own_answers(ort_server, torch_model, dermamnist_pngs):
    chk.assert_concurrent_answers_are_each_requests_own(ort_server, torch_model, dermamnist_pngs)


def test_v2_metadata_and_config_list_the_inputs_and_outputs(ort_server):
    chk.assert_metadata_lists_io(ort_server.url, ort_server.token, chk.MODEL, {"image": ("BYTES", [-1])},
                                 {"probabilities": ("FP32", [-1, 7]), "class": ("BYTES", [-1])})
