"""GPU-pool scheduling and secrets for pipeline tasks, from pipelines/cluster.yaml.

KFP v2 moved node selectors, tolerations and secrets into kfp-kubernetes; accelerator type/limit and
resources stay on the task. The local runner ignores all of them (with a warning), so setting them
unconditionally keeps one pipeline definition for both.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from tailsynth.errors import ConfigError

CONFIG_FILE = Path(__file__).with_name("cluster.yaml")


@lru_cache(maxsize=1)
def settings() -> dict:
    with open(CONFIG_FILE) as f:
        cfg = yaml.safe_load(f)
    for key in ("gpu", "s3_secret"):
        if key not in (cfg or {}):
            raise ConfigError(f"{CONFIG_FILE}: missing section {key!r}")
    return cfg


def use_s3_secret(task):
    from kfp import kubernetes

    s = settings()["s3_secret"]
    kubernetes.use_secret_as_env(task, secret_name=s["name"], secret_key_to_env=dict(s["keys"]))
    return task


def on_gpu(task):
    """Accelerator, resources, GPU node pool, S3 credentials and retries for a GPU stage."""
    from kfp import kubernetes

    g = settings()["gpu"]
    task.set_accelerator_type(g["accelerator_type"]).set_accelerator_limit(int(g["accelerator_limit"]))
    task.set_cpu_request(str(g["cpu_request"])).set_memory_request(str(g["memory_request"]))
    task.set_cpu_limit(str(g["cpu_limit"])).set_memory_limit(str(g["memory_limit"]))
    kubernetes.add_node_selector(task, label_key=g["node_selector"]["key"], label_value=g["node_selector"]["value"])
    t = g["toleration"]
    kubernetes.add_toleration(task, key=t.get("key"), operator=t.get("operator"), value=t.get("value"),
                              effect=t.get("effect"))
    r = g["retries"]
    task.set_retry(num_retries=int(r["num_retries"]), backoff_duration=r.get("backoff_duration"),
                   backoff_factor=r.get("backoff_factor"))
    return use_s3_secret(task)


def on_cpu_with_storage(task):
    """A CPU stage that moves data with DVC: credentials only, no GPU scheduling."""
    return use_s3_secret(task)
