"""`tailsynth serve --mode ensemble`: clients on Triton's own v2 endpoint, lesion-classifier-e2e decoding inside
Triton (the real tritonserver binary from nvidia-pytriton), with the transformer's answers, auth and records."""

from __future__ import annotations

import hashlib

import pytest
import serving_checks as chk

pytestmark = pytest.mark.triton
E2E = chk.ENSEMBLE


def test_real_isic_jpegs_same_as_torch(ensemble_server, torch_model, isic_images):
    chk.assert_ensemble_same_as_torch(ensemble_server, torch_model, [p.read_bytes() for p in isic_images])


def test_dermamnist_pngs_same_as_torch(ensemble_server, torch_model, dermamnist_pngs):
    chk.assert_ensemble_same_as_torch(ensemble_server, torch_model, dermamnist_pngs)


def test_metadata_and_config_of_every_served_model(ensemble_server):
    s, n = ensemble_server, 7
    # Shapes as the v2 metadata gives them: the batch dimension first (-1), then the model's own dims.
    chk.assert_metadata_lists_io(s.url, s.token, E2E, {"image": ("BYTES", [-1, 1])},
                                 {"probabilities": ("FP32", [-1, n]), "class": ("BYTES", [-1, 1])})
    chk.assert_metadata_lists_io(s.url, s.token, "preprocess", {"image": ("BYTES", [-1, 1])},
                                 {"pixels": ("UINT8", [-1, 32, 32, 3])})
    chk.assert_metadata_lists_io(s.url, s.token, "lesion-classifier", {"image": ("UINT8", [-1, 32, 32, 3])},
                                 {"probabilities": ("FP32", [-1, n])})
    chk.assert_metadata_lists_io(s.url, s.token, "postprocess", {"probabilities": ("FP32", [-1, n])},
                                 {"class": ("BYTES", [-1, 1])})
    from tailsynth.serve.client import request_json

    code, body = request_json(s.url, f"/v2/models/{E2E}", None, None, method="GET")
    assert code == 403 and "restricted" in body["error"]  # metadata needs the token too


def test_roles_health_and_loopback(ensemble_server):
    from tailsynth.serve.client import request_json

    s = ensemble_server
    for token in (None, "wrong"):
        code, body = chk.ensemble_infer(s.url, token, [chk.jpeg(0)])
        assert code == 403 and "Authorization" in body["error"] and "s3cret" not in body["error"]
    for token in (s.token, None):  # model-repository control: nobody from outside
        code, _ = request_json(s.url, f"/v2/repository/models/{E2E}/unload", b"{}", token)
        assert code == 403
    code, _ = request_json(s.url, f"/v2/models/{E2E}/stats", None, s.token, method="GET")
    assert code == 403  # statistics are for the admin key
    for path in ("/v2/health/ready", "/v2/health/live", f"/v2/models/{E2E}/ready"):
        assert request_json(s.url, path, None, None, method="GET")[0] == 200, path  # probes need no token
    assert chk.listen_addresses(s.port) == {"127.0.0.1"}
    chk.ensemble_predict(s.url, s.token, [chk.jpeg(0)])  # still serving, model still loaded


def test_grpc_is_restricted_too(ensemble_server):
    """Triton's gRPC port needs the same token, in the metadata key Triton derives from the configured one
    (`triton-grpc-protocol-authorization`); tritonclient.grpc runs in its own process: it cannot meet kserve."""
    import re
    import subprocess
    import sys

    port = re.search(r"gRPC 127\.0\.0\.1:(\d+)", ensemble_server.log()).group(1)
    code = f"""
import numpy as np, sys, tritonclient.grpc as g
c = g.InferenceServerClient("127.0.0.1:{port}")
x = g.InferInput("image", [1, 1], "BYTES"); x.set_data_from_numpy(np.array([[open(sys.argv[1], "rb").read()]], dtype=object))
for h in (None, {{"authorization": "Bearer s3cret"}}, {{"triton-grpc-protocol-authorization": "Bearer wrong"}}):
    try:
        c.infer("{E2E}", [x], headers=h); print("open")
    except g.InferenceServerException as e:
        print("refused", e.status())
print(c.infer("{E2E}", [x], headers={{"triton-grpc-protocol-authorization": "Bearer s3cret"}}).as_numpy("class")[0, 0].decode())
print(c.is_server_ready())
"""
    img = ensemble_server.records.parent / "grpc.jpg"
    img.write_bytes(chk.jpeg(0))
    out = subprocess.run([sys.executable, "-c", code, str(img)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split()
    assert lines[:6] == ["refused", "StatusCode.UNAVAILABLE"] * 3, out.stdout
    assert lines[-2] in ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC") and lines[-1] == "True"  # health open


def test_request_ids_and_records(ensemble_server, dermamnist_pngs):
    from tailsynth.serve.records import read_records

    s = ensemble_server
    imgs = dermamnist_pngs[9:12]
    _, _, rid = chk.ensemble_predict(s.url, s.token, imgs, request_id="client-id-1")
    assert rid == "client-id-1"
    _, _, rid_h = chk.ensemble_predict(s.url, s.token, imgs[:1], headers={"x-request-id": "abc<script>" + "x" * 1000})
    assert rid_h.startswith("abcscriptxxx") and len(rid_h) == 128
    _, _, rid_new = chk.ensemble_predict(s.url, s.token, imgs[1:2])
    assert rid_new and rid_new not in (rid, rid_h)
    chk.assert_records(s.records, imgs)
    recs = read_records(s.records)
    by_id = {}
    for r in recs:
        by_id.setdefault(r["request_id"], []).append(r)
    assert [r["item"] for r in by_id["client-id-1"]] == [0, 1, 2]
    assert [r["image_hash"] for r in by_id["client-id-1"]] == [hashlib.sha256(b).hexdigest() for b in imgs]
    assert len(by_id[rid_h]) == 1 and len(by_id[rid_new]) == 1
    assert {"brightness", "sharpness", "mean_r"} <= set(by_id[rid_new][0]["image_stats"])
    # The supervisor's probes (one a second, with the key only it and Triton know) leave no record ...
    assert "answers again" not in s.log() and not [r for r in recs if r["image_hash"] == "probe"]


def test_a_guessed_probe_key_does_not_skip_the_records(ensemble_server):
    """... and a client that sends the probe parameter with any other value gets its record as always."""
    import urllib.request

    import numpy as np
    import tritonclient.http as th

    from tailsynth.serve.records import read_records

    s = ensemble_server
    inputs = []
    for name, dtype, arr in (("probabilities", "FP32", np.full((1, 7), 1 / 7, np.float32)),
                             ("features", "FP32", np.zeros((1, 512), np.float32)),
                             ("pixels", "UINT8", np.zeros((1, 32, 32, 3), np.uint8)),
                             ("image_sha256", "BYTES", np.array([[b"guessed-probe"]], dtype=np.object_))):
        t = th.InferInput(name, list(arr.shape), dtype)
        t.set_data_from_numpy(arr, binary_data=True)
        inputs.append(t)
    body, n = th.InferenceServerClient.generate_request_body(inputs, parameters={"tailsynth_probe": "guess"})
    req = urllib.request.Request(f"{s.url}/v2/models/postprocess/infer", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {s.token}", "Inference-Header-Content-Length": str(n)})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.status == 200
    assert [r for r in read_records(s.records) if r["image_hash"] == "guessed-probe"]


def test_survives_every_bad_input(ensemble_server):
    chk.assert_ensemble_survives_bad_inputs(ensemble_server, chk.jpeg(0))


def test_concurrent_requests_get_their_own_answers(ensemble_server, torch_model, dermamnist_pngs):
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    model, meta = torch_model
    _, p_ref = chk.local_top1(model, meta, dermamnist_pngs)
    jobs = [list(range(i, min(i + 1 + i % 3, len(dermamnist_pngs)))) for i in range(len(dermamnist_pngs))] * 3

    def one(idx):
        return idx, chk.ensemble_predict(ensemble_server.url, ensemble_server.token,
                                         [dermamnist_pngs[i] for i in idx])[0]

    with ThreadPoolExecutor(12) as ex:
        for idx, p in ex.map(one, jobs):
            assert np.abs(p - p_ref[idx]).max() < 1e-4, idx
