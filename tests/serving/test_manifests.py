"""k8s/serving renders with kustomize, core kinds validate, the InferenceService round-trips through kserve models."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s" / "serving"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


def render(path: Path) -> list[dict]:
    if not Path(KUBECTL).exists():
        pytest.skip("kubectl not installed (needed for `kubectl kustomize`)")
    out = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def from_dict(data, klass: str):
    """Typed kserve/kubernetes model from a manifest dict; fails on any field the schema does not know."""
    import re

    import kserve.models
    import kubernetes.client.models as k8s

    if data is None:
        return None
    m = re.fullmatch(r"list\[(.*)\]", klass)
    if m:
        return [from_dict(x, m.group(1)) for x in data]
    m = re.fullmatch(r"dict\(str, (.*)\)", klass)
    if m:
        return {k: from_dict(v, m.group(1)) for k, v in data.items()}
    if klass in ("str", "int", "bool", "float", "object", "datetime"):
        return data
    cls = getattr(kserve.models, klass, None) or getattr(k8s, klass)
    by_json = {v: k for k, v in cls.attribute_map.items()}
    unknown = set(data) - set(by_json)
    assert not unknown, f"{klass}: fields unknown to the schema: {sorted(unknown)}"
    kwargs = {by_json[k]: from_dict(v, cls.openapi_types[by_json[k]]) for k, v in data.items()}
    try:
        return cls(**kwargs, local_vars_configuration=None) if "local_vars_configuration" in cls.__init__.__code__.co_varnames else cls(**kwargs)
    except TypeError:
        return cls(**kwargs)


@pytest.fixture(scope="module", params=["base", "overlays/canary", "overlays/ensemble"])
def docs(request):
    return request.param, render(K8S / request.param)


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def test_core_kinds_validate(docs):
    import kubernetes_validate

    _, ds = docs
    core = [d for d in ds if d["apiVersion"] in ("v1", "networking.k8s.io/v1")]
    assert {d["kind"] for d in core} == {"ServiceAccount", "NetworkPolicy"}
    for d in core:
        kubernetes_validate.validate(d, "1.32", strict=True)


def test_inference_service_round_trips_through_kserve_models(docs):
    from kserve import ApiClient, V1beta1InferenceService

    name, ds = docs
    (isvc,) = by_kind(ds, "InferenceService")
    obj = from_dict(isvc, "V1beta1InferenceService")
    client = ApiClient()
    assert isinstance(obj, V1beta1InferenceService)
    back = client.sanitize_for_serialization(obj)
    if back["spec"]["predictor"]["model"].get("name") == "" and "name" not in isvc["spec"]["predictor"]["model"]:
        del back["spec"]["predictor"]["model"]["name"]  # the SDK's default for an unnamed model container
    assert back == isvc  # nothing unknown to the kserve schema was dropped or renamed
    pred = obj.spec.predictor
    assert pred.model.model_format.name == "triton" and pred.model.protocol_version == "v2"
    # The Triton storageUri is the repository root, never the model folder.
    assert pred.model.storage_uri.startswith("s3://") and not pred.model.storage_uri.rstrip("/").endswith("lesion-classifier")
    assert pred.model.resources.limits["nvidia.com/gpu"] == "1"
    assert pred.min_replicas >= 1 and pred.max_replicas >= pred.min_replicas
    assert pred.model.readiness_probe.http_get.path == "/v2/health/ready"
    assert pred.model.liveness_probe.http_get.path == "/v2/health/live"
    if name == "overlays/ensemble":
        # Predictor only: Triton itself checks the token (restricted APIs), the token comes from the Secret.
        assert obj.spec.transformer is None
        tok = next(e for e in pred.model.env if e.name == "TAILSYNTH_TOKEN")
        assert tok.value is None and tok.value_from.secret_key_ref.name == "tailsynth-serving-token"
        return
    t = obj.spec.transformer.containers[0]
    assert t.readiness_probe.http_get.path == "/v2/health/ready"
    assert "--host=0.0.0.0" in t.args  # inside the pod; the local default stays 127.0.0.1
    tok = next(e for e in t.env if e.name == "TAILSYNTH_TOKEN")
    assert tok.value is None and tok.value_from.secret_key_ref.name == "tailsynth-serving-token"
    if name == "overlays/canary":
        assert pred.canary_traffic_percent == 10
        assert obj.metadata.annotations["serving.kserve.io/deploymentMode"] == "Serverless"


def test_only_the_transformer_reaches_the_predictor():
    ds = render(K8S / "base")
    pol = next(d for d in by_kind(ds, "NetworkPolicy") if d["metadata"]["name"].endswith("predictor-ingress"))
    assert pol["spec"]["podSelector"]["matchLabels"]["component"] == "predictor"
    (rule,) = pol["spec"]["ingress"]
    assert [f["podSelector"]["matchLabels"]["component"] for f in rule["from"]] == ["transformer"]


def test_ensemble_predictor_takes_clients_only_from_the_gateway_with_the_token():
    ds = render(K8S / "overlays/ensemble")
    pols = by_kind(ds, "NetworkPolicy")
    assert [p["metadata"]["name"] for p in pols] == ["lesion-classifier-predictor-ingress"]  # no transformer
    (rule,) = pols[0]["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "istio-system"}}}]
    assert {p["port"] for p in rule["ports"]} == {8080, 9000}
    (isvc,) = by_kind(ds, "InferenceService")
    model = isvc["spec"]["predictor"]["model"]
    args = model["args"]
    # Every API but health is restricted: inference with the inference token, the rest with the admin token.
    restricted = [a.split("=", 1)[1] for a in args if a.startswith("--http-restricted-api=")]
    apis = {api: value for r in restricted for api in r.split(":")[0].split(",") for value in [r.split(":", 1)[1]]}
    assert apis.keys() == {"inference", "metadata", "model-config", "model-repository", "statistics", "trace",
                           "logging", "shared-memory"}
    assert apis["inference"] == "Authorization=Bearer $(TAILSYNTH_TOKEN)"
    assert apis["model-repository"] == "Authorization=Bearer $(TAILSYNTH_ADMIN_TOKEN)"
    assert len([a for a in args if a.startswith("--grpc-restricted-protocol=")]) == 2
    env = {e["name"]: e for e in model["env"]}
    assert env["TAILSYNTH_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "tailsynth-serving-admin-token"
    # $(VAR) in args is expanded by the kubelet only from the container's own env.
    assert all(f"$({v})" not in " ".join(args) or v in env for v in ("TAILSYNTH_TOKEN", "TAILSYNTH_ADMIN_TOKEN"))
    logs = next(m for m in model["volumeMounts"] if m["name"] == "prediction-logs")
    assert env["TAILSYNTH_RECORDS"]["value"].startswith(logs["mountPath"] + "/")


def test_no_secret_values_in_manifests():
    for d in render(K8S / "base") + render(K8S / "overlays/canary") + render(K8S / "overlays/ensemble"):
        assert d["kind"] != "Secret"


def test_inference_service_containers_are_locked_down(docs):
    """checkov has no checks for the InferenceService CRD, so its containers' hardening is asserted here."""
    _, ds = docs
    (isvc,) = by_kind(ds, "InferenceService")
    spec = isvc["spec"]
    parts = [p for p in ("predictor", "transformer") if p in spec]
    containers = [spec["predictor"]["model"], *spec.get("transformer", {}).get("containers", [])]
    for c in containers:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"] and sc.get("privileged") is False
        assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for part in parts:
        pod = spec[part]["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] >= 10000
        assert spec[part]["automountServiceAccountToken"] is False
        for v in spec[part].get("volumes", []):
            if "emptyDir" in v:
                assert v["emptyDir"].get("sizeLimit"), f"{part} volume {v['name']} has no sizeLimit"
    # Triton's model control stays off in the cluster; the transformer never enables repository control.
    assert "--model-control-mode=none" in spec["predictor"]["model"]["args"]
    for c in spec.get("transformer", {}).get("containers", []):
        assert not any("repository_control" in a for a in c["args"])


def test_ensemble_predictor_image_is_linted_pinned_and_unprivileged():
    import re
    import sys

    path = ROOT / "serving" / "Dockerfile.triton-ensemble"
    text = path.read_text()
    hadolint = Path(sys.executable).parent / "hadolint"
    if hadolint.exists():
        proc = subprocess.run([str(hadolint), str(path)], capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] == "10001"  # the pod's runAsUser
    # Pillow pinned to the main environment's: the decode must give the pixels the model was validated with.
    import PIL

    assert f'"pillow=={PIL.__version__}"' in text
    (isvc,) = by_kind(render(K8S / "overlays/ensemble"), "InferenceService")
    assert isvc["spec"]["predictor"]["model"]["image"].startswith("ghcr.io/tailsynth/triton-ensemble:")
