"""The model repository's integrity manifest: the SHA-256 of every file `tailsynth export` wrote, checked by every
server before it loads the repository and again before each reload or restart.

A model.onnx replaced by noise of the same shapes, a config.pbtxt edited by hand or a version folder added
later would otherwise load, report ready and serve under the exported `model_version`. With the manifest, the
served bytes are exactly the exported bytes, and the version the server reports is bound to them. Torch-free:
the transformer and its worker processes import it.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError, MissingInputError
from ..hashing import file_digest
from .backends import ENSEMBLE_NAME, MODEL_NAME, POSTPROCESS_NAME, PREPROCESS_NAME

MANIFEST = "repository.sha256.json"
FORMAT = "tailsynth.repository/1"
# The folders an export writes; anything else under the repository root (prediction records, logs) is the
# server's own and changes while it runs.
MODEL_FOLDERS = (MODEL_NAME, PREPROCESS_NAME, POSTPROCESS_NAME, ENSEMBLE_NAME)


def _ignored(rel: Path) -> bool:
    # Triton's python backend imports model.py and the vendored library, and Python may cache their bytecode
    # beside them: that is written by the server, not by the export.
    return "__pycache__" in rel.parts or rel.suffix == ".pyc"


def repository_files(repo: Path) -> list[Path]:
    """The exported files under the model folders, as paths relative to REPO, sorted."""
    out = []
    for name in MODEL_FOLDERS:
        d = repo / name
        if d.is_dir():
            out += [p.relative_to(repo) for p in d.rglob("*") if p.is_file() and not _ignored(p.relative_to(repo))]
    return sorted(out, key=lambda p: p.as_posix())


def write_manifest(repo: str | Path, model_version: str) -> Path:
    """Hash every exported file of REPO into REPO/MANIFEST (written last, atomically)."""
    import os

    repo = Path(repo)
    files = {p.as_posix(): file_digest(repo / p) for p in repository_files(repo)}
    body = {"format": FORMAT, "model_version": model_version, "files": files}
    tmp = repo / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, repo / MANIFEST)
    return repo / MANIFEST


def verify_repository(repo: str | Path) -> dict:
    """The manifest, after checking that every listed file is there with its recorded hash, that no other file
    was added to a model folder, and that serving.json names the manifest's version. Errors name the file."""
    repo = Path(repo)
    path = repo / MANIFEST
    if not path.is_file():
        raise MissingInputError(f"{path}: missing; {repo} was not written by this version of `tailsynth export` "
                                f"(or the manifest was removed): export the model again")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: not readable JSON ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise DataError(f"{path}: not a repository manifest of format {FORMAT}")
    listed = manifest["files"]
    for rel, want in sorted(listed.items()):
        f = repo / rel
        if not f.is_file():
            raise DataError(f"{f}: listed in {MANIFEST} but missing: the repository is incomplete")
        if file_digest(f) != want:
            raise DataError(f"{f}: SHA-256 differs from the one recorded at export ({want[:12]}…): the file was "
                            f"changed or damaged; refusing to serve it (export the model again)")
    extra = [p.as_posix() for p in repository_files(repo) if p.as_posix() not in listed]
    if extra:
        raise DataError(f"{repo / extra[0]}: not written by the export (not in {MANIFEST}); a file added to a model "
                        f"folder would be loaded by the server: remove it or export again")
    serving = json.loads((repo / MODEL_NAME / "serving.json").read_text())
    if serving.get("model_version") != manifest.get("model_version"):
        raise DataError(f"{repo / MODEL_NAME / 'serving.json'}: model_version {serving.get('model_version')!r} is "
                        f"not the manifest's {manifest.get('model_version')!r}")
    return manifest
