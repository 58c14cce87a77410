"""Serving fixtures: a tiny real classifier, its exported repository, and real local servers on 127.0.0.1."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
TRITON_VENV = Path(os.environ.get("TAILSYNTH_TRITON_VENV", ROOT / ".venv-triton"))
CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]  # DermaMNIST's seven, in ISIC order
RES = 32
from serving_checks import MAX_BODY, tailsynth_bin  # noqa: E402,F401  (unique module name: conftest is ambiguous)
from local_servers import stop_process  # noqa: E402


def png_bytes(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _dermamnist_batch(npz: Path, n: int, seed: int = 0):
    from tailsynth.data.classes import HAM_TO_ISIC, MEDMNIST_CODES

    d = np.load(npz)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(d["train_labels"]), n, replace=False)
    y = np.array([CLASSES.index(HAM_TO_ISIC[MEDMNIST_CODES[int(v)]]) for v in d["train_labels"][idx, 0]])
    return d["train_images"][idx], y


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """resnet18 at 32 px with its head fitted to real DermaMNIST images when present (untrained otherwise).

    Trained a little so the class scores are not near-ties: top-1 comparisons then test the pipeline, not noise."""
    import torch

    from tailsynth.classify.model import ClassifierMeta, build_backbone, preprocess, save_classifier

    torch.manual_seed(0)
    torch.set_num_threads(2)
    out = tmp_path_factory.mktemp("model")
    model = build_backbone("resnet18", len(CLASSES))
    meta = ClassifierMeta(backbone="resnet18", classes=CLASSES, resolution=RES)
    npz = Path(os.environ.get("TAILSYNTH_SHARED_DATA", ROOT.parent / "shared" / "data")) / "dermamnist" / "dermamnist.npz"
    trained_on = None
    if npz.exists():
        from tailsynth.data.records import resize_rgb

        imgs, y = _dermamnist_batch(npz, 512)
        x = preprocess(np.stack([resize_rgb(i, RES) for i in imgs]), meta)
        yt = torch.from_numpy(y)
        # A linear probe on the random backbone's features: seconds on 2 cores, and decisive class scores.
        with torch.no_grad():
            f = model.forward_head(model.forward_features(x), pre_logits=True)
        head = model.get_classifier()
        opt = torch.optim.Adam(head.parameters(), lr=1e-2)
        for step in range(150):
            loss = torch.nn.functional.cross_entropy(head(f), yt)
            opt.zero_grad()
            loss.backward()
            opt.step()
        trained_on = "dermamnist train (512 images, linear probe)"
    model.eval()
    save_classifier(model, out, backbone="resnet18", classes=CLASSES, resolution=RES,
                    config={"test_fixture": True, "trained_on": trained_on}, data_revision="test-fixture")
    # A monitoring projection beside the model (as `tailsynth monitor reference` writes it): 5 dims.
    (out / "monitor").mkdir()
    rng = np.random.default_rng(0)
    np.savez(out / "monitor" / "embedding.npz", mean=rng.normal(size=512).astype(np.float32),
             components=rng.normal(size=(5, 512)).astype(np.float32), explained_variance_ratio=np.ones(5, np.float32))
    (out / "metrics.json").write_text('{"balanced_accuracy": 0.3, "per_class": {"MEL": {"recall": 0.2}, "NV": {"recall": 0.9}}}')
    return out


@pytest.fixture(scope="session")
def local_repo(tiny_model, tmp_path_factory) -> Path:
    from tailsynth.export import export_model

    out = tmp_path_factory.mktemp("repo")
    export_model(tiny_model, out, "local")
    return out


@pytest.fixture(scope="session")
def torch_model(tiny_model):
    from tailsynth.classify.model import load_classifier

    return load_classifier(tiny_model)


class Server:
    """`tailsynth serve` in a subprocess on a free loopback port; stopped with SIGTERM."""

    def __init__(self, repo: Path, backend: str, token: str | None, records: Path,
                 extra=("--max-body-bytes", str(MAX_BODY)), env: dict | None = None, log_dir: Path | None = None):
        from tailsynth.serve.ports import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.records = records
        self.token = token
        # log_dir: elsewhere than the records, e.g. when the records' filesystem is filled on purpose.
        self.log_path = (log_dir or records.parent) / f"serve-{backend}-{self.port}.log"
        self.ensemble = "ensemble" in extra
        cmd = [tailsynth_bin(), "serve", "--repo", str(repo), "--backend", backend, "--port", str(self.port),
               "--records", str(records), *extra]
        env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
        env.pop("TAILSYNTH_TOKEN", None)
        env.pop("TAILSYNTH_ADMIN_TOKEN", None)
        if token:
            cmd += ["--token", token]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env)

    def wait_ready(self, timeout=120):
        from tailsynth.serve.ports import wait_http_ready

        try:
            wait_http_ready(f"{self.url}/v2/health/ready", self.proc, timeout)
            if self.ensemble:
                # Triton answers ready as soon as its models are loaded, a moment before `tailsynth serve` has
                # finished starting it (and its supervision): wait for the launcher's own line.
                import time

                deadline = time.monotonic() + timeout
                while "ensemble lesion-classifier-e2e ready on" not in self.log():
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("no ready line")
                    time.sleep(0.1)
        except Exception:
            self.stop()
            raise RuntimeError(f"server did not start:\n{self.log()[-4000:]}")
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        code = stop_process(self.proc, 40)
        self._log.close()
        return code


@pytest.fixture(scope="session")
def ort_server(local_repo, tmp_path_factory):
    s = Server(local_repo, "onnxruntime", "s3cret", tmp_path_factory.mktemp("ort") / "predictions.jsonl").wait_ready()
    yield s
    s.stop()


def need_triton():
    if not (TRITON_VENV / "bin" / "python").exists():
        pytest.skip(f"no Triton environment at {TRITON_VENV}: run serving/setup_triton_env.sh "
                    "(nvidia-pytriton==0.7.0, numpy<2) to run the local Triton tests")


@pytest.fixture(scope="session")
def triton_env():
    need_triton()
    return TRITON_VENV


@pytest.fixture(scope="session")
def triton_server(triton_env, local_repo, tmp_path_factory):  # triton_env first: skip before building anything
    import re

    import serving_checks

    s = Server(local_repo, "triton", "s3cret", tmp_path_factory.mktemp("triton") / "predictions.jsonl").wait_ready()
    yield s
    m = re.search(r"triton ready on http://127\.0\.0\.1:(\d+)", s.log())
    rc = s.stop()
    # SIGTERM stops the transformer cleanly and takes the Triton child down with it.
    assert rc == 0, s.log()[-3000:]
    assert m and not serving_checks.listen_addresses(int(m.group(1))), "tritonserver still listening after SIGTERM"


@pytest.fixture(scope="session")
def ensemble_server(triton_env, local_repo, tmp_path_factory):
    """`tailsynth serve --mode ensemble`: Triton alone on the port, serving lesion-classifier-e2e."""
    s = Server(local_repo, "triton", "s3cret", tmp_path_factory.mktemp("ensemble") / "predictions.jsonl",
               extra=("--mode", "ensemble")).wait_ready()
    yield s
    rc = s.stop()
    assert rc == 0, s.log()[-3000:]
    import serving_checks

    assert not serving_checks.listen_addresses(s.port), "tritonserver still listening after SIGTERM"


@pytest.fixture(scope="session")
def isic_images(isic_sample) -> list[Path]:
    files = sorted((isic_sample / "ISIC_2019_Training_Input").glob("*.jpg"))
    return files[::max(1, len(files) // 24)][:24]


@pytest.fixture(scope="session")
def dermamnist_pngs(dermamnist_npz) -> list[bytes]:
    d = np.load(dermamnist_npz)
    return [png_bytes(img) for img in d["val_images"][:16]]


@pytest.fixture(scope="session")
def server_cls():
    """The Server launcher, for tests that start their own (a fixture: `conftest` is ambiguous as a module name)."""
    return Server
