"""Download the real data sets from their official locations (on a machine with internet).

- dermamnist: the MedMNIST v2 file `dermamnist.npz` from Zenodo (the URL and MD5 the `medmnist` package uses).
- isic2019: the ISIC 2019 challenge files from the ISIC challenge bucket (ground truth, metadata, images).

A file already present at the destination is used as is. A missing one is downloaded; when that fails
(no network here), the error says which file, from where, and where to put it.
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..hashing import file_digest
from .errors import DataError

DERMAMNIST_URL = "https://zenodo.org/records/10519652/files/dermamnist.npz?download=1"
DERMAMNIST_MD5 = "0744692d530f8e62ec473284d019b0c7"
MEDMNIST_PAGE = "https://medmnist.com/ (Zenodo record 10519652)"
ISIC_BASE = "https://isic-challenge-data.s3.amazonaws.com/2019"
ISIC_PAGE = "https://challenge.isic-archive.com/data/#2019"


@dataclass(frozen=True)
class RemoteFile:
    name: str  # file name at the destination (an archive is extracted to `extract_to`)
    url: str
    md5: str | None = None
    extract_to: str | None = None  # folder that an archive unpacks into
    optional: bool = False


def _dermamnist_files(base_url: str | None) -> list[RemoteFile]:
    url, md5 = DERMAMNIST_URL, DERMAMNIST_MD5
    try:  # stay in step with the medmnist package when it is installed
        from medmnist.info import INFO  # type: ignore

        url, md5 = INFO["dermamnist"]["url"], INFO["dermamnist"]["MD5"]
    except (ImportError, KeyError):
        pass  # not installed, or a layout we do not know: the pinned official URL above holds
    if base_url:
        url, md5 = f"{base_url.rstrip('/')}/dermamnist.npz", None  # a mirror: no official checksum to hold it to
    return [RemoteFile("dermamnist.npz", url, md5)]


def _isic_files(base_url: str | None, labels_only: bool, with_test: bool) -> list[RemoteFile]:
    base = (base_url or ISIC_BASE).rstrip("/")
    files = [
        RemoteFile("ISIC_2019_Training_GroundTruth.csv", f"{base}/ISIC_2019_Training_GroundTruth.csv"),
        RemoteFile("ISIC_2019_Training_Metadata.csv", f"{base}/ISIC_2019_Training_Metadata.csv"),
    ]
    if not labels_only:
        files.append(RemoteFile("ISIC_2019_Training_Input.zip", f"{base}/ISIC_2019_Training_Input.zip",
                                extract_to="ISIC_2019_Training_Input"))
    if with_test:
        files += [
            RemoteFile("ISIC_2019_Test_Metadata.csv", f"{base}/ISIC_2019_Test_Metadata.csv"),
            RemoteFile("ISIC_2019_Test_GroundTruth.csv", f"{base}/ISIC_2019_Test_GroundTruth.csv", optional=True),
        ]
        if not labels_only:
            files.append(RemoteFile("ISIC_2019_Test_Input.zip", f"{base}/ISIC_2019_Test_Input.zip",
                                    extract_to="ISIC_2019_Test_Input"))
    return files


def download(url: str, dest: Path, md5: str | None = None, timeout: float = 30, progress: bool = False) -> Path:
    """Stream `url` to `dest` through a `.part` file (never leaves a half file under the final name)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    req = urllib.request.Request(url, headers={"User-Agent": "tailsynth-fetch"})
    with urllib.request.urlopen(req, timeout=timeout) as resp, open(part, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0) or None
        if progress:
            from rich.progress import Progress

            with Progress(transient=True) as bar:
                task = bar.add_task(f"downloading {dest.name}", total=total)
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    out.write(chunk)
                    bar.advance(task, len(chunk))
        else:
            shutil.copyfileobj(resp, out, 1 << 20)
    if md5 is not None:
        got = file_digest(part, "md5")
        if got != md5:
            part.unlink()
            raise DataError(f"{url}: downloaded file has MD5 {got}, expected {md5} (corrupt or changed upstream)")
    os.replace(part, dest)
    return dest


def _present(dest: Path, f: RemoteFile) -> Path | None:
    if f.extract_to:
        folder = dest / f.extract_to
        if folder.is_dir() and any(folder.iterdir()):
            return folder
    target = dest / f.name
    return target if target.is_file() and target.stat().st_size > 0 else None


def _extract(archive: Path, dest: Path, folder: str) -> Path:
    try:
        with zipfile.ZipFile(archive) as z:
            z.extractall(dest)  # the official archives hold <folder>/<image>.jpg
    except zipfile.BadZipFile as e:
        raise DataError(f"{archive}: not a valid zip archive ({e}); delete it and fetch again") from e
    out = dest / folder
    if not out.is_dir():
        raise DataError(f"{archive}: extracted, but it did not contain the folder {folder}/")
    return out


def fetch(
    dataset: str,
    dest: str | Path,
    timeout: float = 30,
    base_url: str | None = None,
    labels_only: bool = False,
    with_test: bool = False,
    keep_archives: bool = False,
    progress: bool = False,
) -> dict:
    """Make `dataset` ("dermamnist" or "isic2019") available under `dest`; returns what was used/downloaded.

    `base_url` points at a mirror holding the same file names; `labels_only` (isic2019) skips the 9 GB images.
    """
    dest = Path(dest)
    if dataset == "dermamnist":
        files, page = _dermamnist_files(base_url), MEDMNIST_PAGE
        hint = ("or, with the medmnist package: python -c \"import medmnist; "
                f"medmnist.DermaMNIST(split='train', download=True, root='{dest}')\"")
    elif dataset == "isic2019":
        files, page = _isic_files(base_url, labels_only, with_test), ISIC_PAGE
        hint = "the image archive unpacks to ISIC_2019_Training_Input/"
    else:
        raise DataError(f"unknown dataset {dataset!r} (expected 'dermamnist' or 'isic2019')")
    report = {"dataset": dataset, "dest": str(dest), "files": {}}
    for f in files:
        have = _present(dest, f)
        if have is not None:
            report["files"][f.name] = {"status": "present", "path": str(have)}
            continue
        try:
            got = download(f.url, dest / f.name, f.md5, timeout=timeout, progress=progress)
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            if f.optional:
                report["files"][f.name] = {"status": "unavailable", "url": f.url, "error": str(e)}
                continue
            reason = getattr(e, "reason", e)
            raise DataError(
                f"{dest / f.name}: missing, and downloading it from {f.url} failed ({reason}). "
                f"Download it on a machine with internet from {page} and place it at {dest / f.name} "
                f"({hint})."
            ) from None
        if f.extract_to:
            folder = _extract(got, dest, f.extract_to)
            if not keep_archives:
                got.unlink()
            report["files"][f.name] = {"status": "downloaded", "path": str(folder), "url": f.url}
        else:
            report["files"][f.name] = {"status": "downloaded", "path": str(got), "url": f.url}
    report["source"] = str(dest / "dermamnist.npz") if dataset == "dermamnist" else str(dest)
    return report
