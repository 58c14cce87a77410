"""A local task cache whose keys hold across runs, so an interrupted `pipeline run --cache` resumes.

KFP 2.17's local cache keys a task on its input artifacts' URIs; every run writes under a new timestamped
folder, so an artifact-consuming task never hits. This cache keys on (component, image, command, parameters,
environment, and the sha256 of each input artifact's *content*). A finished task's outputs stay where that
run wrote them (under the same pipeline root), and a later run with the same inputs reuses them. External data
enters the key through the `data_revision` parameter, the synthesizer through its model artifact's hash.

Each entry gets a sidecar `<key>.task.json` naming its component, so a run can report what it reused.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

from kfp import dsl
from kfp.local import cache as kfp_cache


def tree_digest(path: str | Path) -> str:
    """sha256 over a file, or over a folder's relative paths and file bytes in sorted order."""
    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
    for f in files:
        h.update(str(f.relative_to(p) if f != p else f.name).encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()


class ContentKeyedCache(kfp_cache.LocalCache):
    def __init__(self, cache_root: str) -> None:
        super().__init__(cache_root)
        self.hits: list[tuple[str, str]] = []  # (component, key) reused in this run
        self.misses: list[tuple[str, str]] = []  # (component, key) executed in this run
        self._component: dict[str, str] = {}
        self._inputs: dict[str, object] = {}  # what the key was computed from, kept in the sidecar
        self._digests: dict[tuple, str] = {}
        self._mutex = threading.Lock()  # ParallelFor iterations run concurrently

    def _digest(self, uri: str) -> str:
        try:
            st = os.stat(uri)
            memo = (uri, st.st_mtime_ns, st.st_size)
        except OSError:
            return "missing:" + uri
        with self._mutex:
            if memo not in self._digests:
                self._digests[memo] = tree_digest(uri)
            return self._digests[memo]

    def _by_content(self, value):
        if isinstance(value, dsl.Artifact):
            return {"artifact": type(value).schema_title, "sha256": self._digest(value.path),
                    "metadata": value.metadata}
        if isinstance(value, list):
            return [self._by_content(v) for v in value]
        if isinstance(value, dict):
            return {k: self._by_content(v) for k, v in value.items()}
        return value

    def compute_key(self, component_name, image, full_command, arguments, env_vars=None, custom_cache_key=None):
        by_content = self._by_content(arguments)
        key = super().compute_key(component_name, image, full_command, by_content, env_vars, custom_cache_key)
        with self._mutex:
            self._component[key] = component_name.removeprefix("comp-")
            self._inputs[key] = by_content
        return key

    def get(self, key: str):
        found = super().get(key)
        with self._mutex:
            (self.hits if found is not None else self.misses).append((self._component.get(key, "?"), key))
        return found

    def put(self, key: str, outputs) -> None:
        # The local runner keeps Metrics only in executor_output.json, never at the artifact's URI, and kfp's cache
        # treats a missing file as a miss: write the metrics there so a finished task's entry stays valid.
        for value in outputs.values():
            for art in value if isinstance(value, list) else [value]:
                if isinstance(art, dsl.Artifact) and art.uri and "://" not in art.uri and not os.path.exists(art.uri):
                    Path(art.uri).parent.mkdir(parents=True, exist_ok=True)
                    Path(art.uri).write_text(json.dumps(art.metadata, default=str))
        super().put(key, outputs)
        side = Path(self.cache_root) / f"{key}.task.json"
        side.write_text(json.dumps({"component": self._component.get(key, "?"), "finished": time.time(),
                                    "inputs": self._inputs.get(key)}, default=str))

    def summary(self) -> dict:
        return {"cached_tasks": sorted(c for c, _ in self.hits), "executed_tasks": sorted(c for c, _ in self.misses),
                "cached_keys": sorted(k for _, k in self.hits), "executed_keys": sorted(k for _, k in self.misses)}


def install(cache_root: str | Path) -> ContentKeyedCache:
    """Make kfp.local use a ContentKeyedCache at CACHE_ROOT (after `local.init(enable_caching=True, cache_root=...)`)."""
    root = str(cache_root)
    cache = ContentKeyedCache(root)
    # kfp.local reads its cache through this module-level singleton (get_local_cache); seat ours there.
    with kfp_cache._cache_singleton_lock:
        kfp_cache._cache_singleton = cache
        kfp_cache._cache_singleton_root = root
    if kfp_cache.get_local_cache() is not cache:
        raise RuntimeError("kfp.local did not take the content-keyed task cache (kfp's cache internals changed?)")
    return cache
