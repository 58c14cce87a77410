"""The monitor's kustomization renders offline, validates, and wires the S3 Secret by name only."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tailsynth.data.classes import TAIL_CLASSES
from tailsynth.monitor.policy import load_config

ROOT = Path(__file__).resolve().parents[2]
KDIR = ROOT / "k8s" / "monitor"


@pytest.fixture(scope="module")
def rendered() -> list[dict]:
    if not shutil.which("kubectl"):
        pytest.skip("kubectl not installed")
    out = subprocess.run(["kubectl", "kustomize", str(KDIR)], capture_output=True, text=True, check=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_cronjob_uses_secret_by_name_and_publishes(rendered):
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == ["ConfigMap", "ConfigMap", "CronJob", "Namespace", "ServiceAccount"]
    assert "Secret" not in kinds  # credentials are never part of the manifests
    cj = next(d for d in rendered if d["kind"] == "CronJob")
    pod = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    c = pod["containers"][0]
    # Secrets are mounted as files (checkov CKV_K8S_35), never env entries of the pod spec.
    assert not [e for e in c.get("env", []) if "valueFrom" in e]
    secrets = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"s3-credentials": "tailsynth-monitor-s3", "kfp-token": "tailsynth-kfp-token"}
    script = c["args"][0]
    assert '$(cat "$S3/AWS_ACCESS_KEY_ID")' in script
    assert "tailsynth monitor report" in script and "--publish \"s3://${S3_BUCKET}/${REPORTS_PREFIX}\"" in script
    assert "--trigger kfp" in script and cj["spec"]["concurrencyPolicy"] == "Forbid"
    cms = {d["metadata"]["name"].rsplit("-", 1)[0]: d for d in rendered if d["kind"] == "ConfigMap"}
    # kustomize hashes generated ConfigMap names; the CronJob must refer to the hashed names
    vol = next(v for v in pod["volumes"] if v["name"] == "config")["configMap"]["name"]
    assert vol == cms["tailsynth-monitor-config"]["metadata"]["name"]
    assert c["envFrom"][0]["configMapRef"]["name"] == cms["tailsynth-monitor-env"]["metadata"]["name"]
    assert all(d["metadata"].get("namespace", "tailsynth-monitoring") == "tailsynth-monitoring" for d in rendered)


def test_manifests_validate(rendered, tmp_path):
    kv = pytest.importorskip("kubernetes_validate")
    for d in rendered:
        kv.validate(d, "1.30.0", strict=True)


def test_shipped_policy_config_loads(tmp_path):
    cfg = load_config(KDIR / "monitor.yaml")
    assert cfg.drift.alpha == 0.01 and cfg.tail_classes == list(TAIL_CLASSES)
    assert cfg.trigger.host and cfg.trigger.arguments["current_model_uri"].startswith("s3://")


def test_rendered_policy_names_the_tail_classes(rendered):
    """The ConfigMap the CronJob mounts carries tailsynth.data.classes.TAIL_CLASSES, in order."""
    cm = next(d for d in rendered if d["kind"] == "ConfigMap" and "monitor.yaml" in d.get("data", {}))
    assert yaml.safe_load(cm["data"]["monitor.yaml"])["tail"]["classes"] == list(TAIL_CLASSES)
