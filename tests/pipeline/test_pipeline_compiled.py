"""The committed compiled YAML: up to date, and GPU scheduling only where it belongs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPILED = ROOT / "pipelines" / "compiled"
GPU_EXECUTORS = {"exec-train-classifier", "exec-train-classifier-augmented", "exec-train-diffusion", "exec-generate",
                 "exec-synth-gate"}
SECRET_ONLY = {"exec-version"}  # pushes the synthetic set with DVC: credentials, but no GPU


@pytest.fixture(scope="module")
def recompiled(tmp_path_factory):
    """Compile in a fresh interpreter with the image overrides cleared, as `tailsynth pipeline compile` would."""
    out = tmp_path_factory.mktemp("compiled")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILSYNTH_IMAGE_")}
    code = f"from pipelines.compile import compile_all; compile_all({str(out)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)
    return out


@pytest.mark.parametrize("name", ["train_augment", "regenerate_tail"])
def test_committed_yaml_matches_source(recompiled, name):
    committed = (COMPILED / f"{name}.yaml").read_text()
    fresh = (recompiled / f"{name}.yaml").read_text()
    assert fresh == committed, f"pipelines/compiled/{name}.yaml is stale: run `tailsynth pipeline compile`"


def _docs(name):
    docs = list(yaml.safe_load_all((COMPILED / f"{name}.yaml").read_text()))
    spec = docs[0]
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"] if len(docs) > 1 else {}
    return spec, platform


@pytest.mark.parametrize("name", ["train_augment", "regenerate_tail"])
def test_gpu_stages_carry_scheduling_and_cpu_stages_none(name):
    import yaml as _y

    spec, platform = _docs(name)
    cluster = _y.safe_load((ROOT / "pipelines" / "cluster.yaml").read_text())
    executors = spec["deploymentSpec"]["executors"]
    present_gpu = GPU_EXECUTORS & set(executors)
    assert "exec-generate" in present_gpu and "exec-train-classifier-augmented" in present_gpu
    for ex, body in executors.items():
        if "importer" in body:
            continue
        res = body["container"].get("resources", {})
        plat = platform.get(ex, {})
        # A component used twice gets a numbered executor (exec-train-classifier-augmented-2): same scheduling.
        if re.sub(r"-\d+$", "", ex) in GPU_EXECUTORS:
            acc = res["accelerator"]
            assert acc["resourceType"] == "nvidia.com/gpu" and int(acc["resourceCount"]) == 1, ex
            assert "cuda" in body["container"]["image"]
            assert res.get("resourceCpuRequest") and res.get("resourceMemoryRequest"), ex
            assert plat["nodeSelector"]["labels"] == {cluster["gpu"]["node_selector"]["key"]:
                                                      cluster["gpu"]["node_selector"]["value"]}
            assert plat["tolerations"] == [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}]
            envs = {k["envVar"] for s in plat["secretAsEnv"] for k in s["keyToEnv"]}
            assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= envs
            assert plat["secretAsEnv"][0]["secretName"] == cluster["s3_secret"]["name"]
        else:
            assert "accelerator" not in res, ex
            assert "cpu" in body["container"]["image"], ex
            assert "nodeSelector" not in plat and "tolerations" not in plat, ex
            if ex in SECRET_ONLY:
                assert plat["secretAsEnv"][0]["secretName"] == cluster["s3_secret"]["name"]
            else:
                assert "secretAsEnv" not in plat, ex


def _all_tasks(spec):
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update((comp.get("dag") or {}).get("tasks") or {})
    return tasks


def test_gpu_tasks_retry_and_data_revision_is_a_cache_input():
    spec, _ = _docs("train_augment")
    tasks = _all_tasks(spec)
    for name, t in tasks.items():
        ex = re.sub(r"-\d+$", "", t["componentRef"]["name"].replace("comp-", "exec-"))
        if ex in GPU_EXECUTORS:
            assert t["retryPolicy"]["maxRetryCount"] >= 1, name
        else:
            assert "retryPolicy" not in t, name
    # The cache key of the first stage includes the data revision (KFP cannot see into external data).
    params = tasks["validate"]["inputs"]["parameters"]
    assert params["data_revision"]["componentInputParameter"] == "data_revision"
    assert "data_revision" in spec["root"]["inputDefinitions"]["parameters"]


def test_generation_fans_out_and_export_is_gated():
    spec, _ = _docs("regenerate_tail")
    tasks = _all_tasks(spec)
    loop = [t for t in tasks.values() if "parameterIterator" in t]
    assert loop and loop[0]["parameterIterator"]["items"]["inputParameter"]
    gated = [t for t in tasks.values() if "triggerPolicy" in t and "condition" in t["triggerPolicy"]]
    assert any(">= 0.0" in t["triggerPolicy"]["condition"] for t in gated)
    inner = spec["components"][next(t["componentRef"]["name"] for t in gated)]["dag"]["tasks"]
    assert "export" in inner


def test_stage_labels_name_every_task_folder_once():
    from pipelines.local import compiled_stage_labels

    labels = compiled_stage_labels("train_augment")
    spec, _ = _docs("train_augment")
    leaves = {name.removeprefix("comp-") for name, c in spec["components"].items() if "dag" not in c}
    assert set(labels) == leaves
    assert len(set(labels.values())) == len(labels)  # one readable name per task
    assert labels["train-classifier-augmented-3"] == "train-prior-shift-control"
    assert {labels["evaluate"], labels["evaluate-2"]} == {"evaluate-retrained (real+synthetic)",
                                                          "evaluate-retrained (real+harmonized)"}
