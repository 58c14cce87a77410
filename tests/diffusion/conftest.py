import os
import sys
from pathlib import Path

import pytest

# Make `tests.conftest` (the shared tiny-data helpers) importable as a module.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

# Tests here are tiny; one thread keeps them predictable on the shared 2-core machine.
os.environ["OMP_NUM_THREADS"] = "1"


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny diffusion model trained for a few steps on tiny ISIC-layout data (module-scoped: built once)."""
    from tailsynth.diffusion.train import train_diffusion
    from tests.conftest import make_isic_folder

    root = tmp_path_factory.mktemp("diff")
    labels = ["NV"] * 14 + ["MEL"] * 6 + ["BCC"] * 4 + ["AK"] * 3 + ["BKL"] * 4 + ["DF"] * 3 + ["VASC"] * 3 + ["SCC"] * 3
    data = make_isic_folder(root / "isic", labels, lesions=[f"L{i // 2}" for i in range(len(labels))])
    model = root / "model"
    train_diffusion(data, "tiny", model, resolution=16, steps=3, batch_size=4, log_every=1)
    return model, data
