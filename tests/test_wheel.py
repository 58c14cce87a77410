"""The built wheel works on its own: installed into a fresh virtual environment outside the checkout, it compiles
the pipelines, exports a classifier and serves it with the onnxruntime backend.

Kept lean: the new environment sees the shared environment's third-party packages through a path file (which,
unlike a site directory, does not run that environment's editable-install hook for tailsynth), and the wheel
goes in with --no-deps, so nothing large is reinstalled."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import venv
from pathlib import Path

import numpy as np
import pytest
from local_servers import stop_process

ROOT = Path(__file__).resolve().parents[1]
TOP_LEVEL_SKIP = {".git", "runs", "build", "dist", "data", ".pytest_cache", ".ruff_cache"}


def _copy_sources(dst: Path) -> Path:
    def ignore(folder, names):
        top = Path(folder) == ROOT
        return [n for n in names if (top and (n in TOP_LEVEL_SKIP or n.startswith(".venv")))
                or n == "__pycache__" or n.endswith(".egg-info")]

    shutil.copytree(ROOT, dst, ignore=ignore, symlinks=True)
    return dst


def _run(cmd, cwd, env, timeout=300):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv bin folder, a clean environment, a working folder outside the checkout)."""
    pytest.importorskip("kfp")
    pytest.importorskip("onnxruntime")
    base = tmp_path_factory.mktemp("wheel")
    src = _copy_sources(base / "src")
    dist = base / "dist"
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist,
                    src], check=True, capture_output=True)
    wheel = next(dist.glob("tailsynth-*.whl"))
    env_dir = base / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    site = next(env_dir.glob("lib/python*/site-packages"))
    (site / "shared_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", env_dir / "bin" / "python", "install", "-q", "--no-deps",
          "--no-index", wheel], cwd=base, env=os.environ)
    work = base / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1", PATH=f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}")
    print(f"wheel built and installed in {time.time() - t0:.1f} s")
    return env_dir / "bin", env, work


def test_wheel_imports_from_its_own_install(installed):
    bindir, env, work = installed
    out = _run([bindir / "python", "-c", "import tailsynth, pipelines, components, pipelines.trigger; "
                "print(tailsynth.__file__, pipelines.__file__, components.__file__)"], work, env)
    for path in out.split():
        assert str(bindir.parent) in path and str(ROOT) not in path, out


def test_wheel_compiles_the_pipelines(installed):
    bindir, env, work = installed
    _run([bindir / "tailsynth", "pipeline", "compile", "--out", work / "compiled"], work, env)
    for name in ("train_augment", "regenerate_tail"):
        fresh = (work / "compiled" / f"{name}.yaml").read_text()
        assert fresh == (ROOT / "pipelines" / "compiled" / f"{name}.yaml").read_text(), name


def test_wheel_exports_and_serves_with_onnxruntime(installed, tmp_path):
    from tailsynth.serve.client import predict_files
    from tailsynth.serve.ports import free_port, wait_http_ready

    bindir, env, work = installed
    model = work / "model"
    _run([bindir / "python", "-c", "import torch; from tailsynth.classify.model import build_backbone, save_classifier; "
          "torch.manual_seed(0); save_classifier(build_backbone('test_resnet', 3), "
          f"{str(model)!r}, backbone='test_resnet', classes=['NV', 'DF', 'VASC'], resolution=32)"], work, env)
    repo = work / "repo"
    _run([bindir / "tailsynth", "export", "--model", model, "--out", repo], work, env)
    assert (repo / "lesion-classifier" / "serving.json").is_file()

    from PIL import Image

    image = tmp_path / "lesion.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(image)
    port = free_port()
    log = open(work / "serve.log", "wb")
    proc = subprocess.Popen([str(bindir / "tailsynth"), "serve", "--repo", str(repo), "--backend", "onnxruntime",
                             "--port", str(port)], cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_http_ready(f"http://127.0.0.1:{port}/v2/health/ready", proc, 120)
        rows = list(predict_files(f"http://127.0.0.1:{port}", [image], None))
        assert len(rows) == 1 and set(rows[0]["probabilities"]) == {"NV", "DF", "VASC"}, rows
    finally:
        stop_process(proc, 40)
        log.close()
    assert proc.returncode == 0, (work / "serve.log").read_text()[-3000:]
