"""Serving finds its Triton environment (.venv-triton) from any working folder: TAILSYNTH_TRITON_VENV, else the
working folder or above, else the checkout the package was installed from (pip's record of an editable install: the
location setup_triton_env.sh recorded there, then its .venv-triton); when none is found the error names every path
tried and how to make one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import tailsynth
from tailsynth.serve.triton import (
    ENV_VAR,
    LOCATION_FILE,
    VENV_NAME,
    TritonUnavailable,
    find_triton_env,
    source_root,
)

SRC = Path(tailsynth.__file__).resolve().parents[1]


def _fake_env(path: Path) -> Path:
    """What the search accepts as an environment: a folder with bin/python (locate() then checks the rest)."""
    (path / "bin").mkdir(parents=True)
    (path / "bin" / "python").symlink_to(sys.executable)
    return path


@pytest.fixture
def places(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    root = tmp_path / "checkout"
    root.mkdir()
    cwd = tmp_path / "work" / "deep"
    cwd.mkdir(parents=True)
    return tmp_path, root, cwd


def test_none_found_names_every_path_and_the_setup(places):
    _, root, cwd = places
    with pytest.raises(TritonUnavailable) as e:
        find_triton_env(cwd=cwd, root=root)
    msg = str(e.value)
    assert str(cwd / VENV_NAME) in msg and str(root / VENV_NAME) in msg
    assert "setup_triton_env.sh" in msg and ENV_VAR in msg and "nvidia-pytriton" in msg


def test_search_order(places, monkeypatch):
    tmp_path, root, cwd = places
    checkout_env = _fake_env(root / VENV_NAME)
    assert find_triton_env(cwd=cwd, root=root) == checkout_env  # from a folder outside the checkout
    recorded = _fake_env(tmp_path / "custom-triton")
    (root / LOCATION_FILE).write_text(f"{recorded}\n")
    assert find_triton_env(cwd=cwd, root=root) == recorded  # setup_triton_env.sh with TRITON_VENV elsewhere
    above = _fake_env(tmp_path / "work" / VENV_NAME)
    assert find_triton_env(cwd=cwd, root=root) == above  # the working folder's (or above) comes first
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(TritonUnavailable, match=f"{tmp_path / 'missing'} \\({ENV_VAR}\\)"):
        find_triton_env(cwd=cwd, root=root)  # an explicit choice is never silently replaced


def test_real_environment_found_from_another_working_folder(tmp_path):
    root = source_root()
    if root is None or not (root / VENV_NAME / "bin" / "python").exists():
        pytest.skip(f"no {VENV_NAME} in the checkout: run serving/setup_triton_env.sh (test_search_order covers "
                    "the search with stand-in folders)")
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(SRC.parent)])
    r = subprocess.run([sys.executable, "-c", "from tailsynth.serve.triton import locate; print(locate()['binary'])"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    binary = Path(r.stdout.strip())
    recorded = (root / LOCATION_FILE).read_text().strip() if (root / LOCATION_FILE).is_file() else ""
    expected = Path(recorded) if recorded and Path(recorded, "bin", "python").exists() else root / VENV_NAME
    assert binary.is_file() and binary.is_relative_to(expected), (binary, expected)
