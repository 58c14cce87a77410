"""Drill harness: a quickly trained classifier, a held-out pool split into reference and live halves, and
windows drawn from the live half — used by the monitor tests and by benchmarks/monitor_drill.py.

The quick classifier exists so that monitoring can be exercised without the project trainer; it is
trained on part of DermaMNIST train only, so that the rest of train plus val is real held-out traffic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def drill_manifest(data: str | Path, out: str | Path, fit: int = 4000, seed: int = 0) -> dict[str, int]:
    """Split manifest (data.splits.write_split_manifest): `fit` random train images; the rest of train + val split into
    `ref` and `live` halves at random (not stratified: i.i.d. halves, as traffic would be)."""
    from ..data import load_source
    from ..data.splits import write_split_manifest

    ds = load_source(data)
    rng = np.random.default_rng(seed)
    train = [r.image_id for r in ds.records if r.split == "train"]
    rng.shuffle(train)
    held = train[fit:] + [r.image_id for r in ds.records if r.split == "val"]
    rng.shuffle(held)
    half = len(held) // 2
    rows = [(i, "fit") for i in train[:fit]] + [(i, "ref") for i in held[:half]] + [(i, "live") for i in held[half:]]
    write_split_manifest(ds.with_splits(dict(rows)), out)
    return {"fit": fit, "ref": half, "live": len(held) - half}


def train_quick_classifier(data: str | Path, manifest: str | Path, out: str | Path, backbone: str = "resnet18",
                           epochs: int = 2, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
                           max_steps: int | None = None) -> dict:
    """A small timm classifier on the `fit` split, class-balanced sampling so tail classes get predicted."""
    import torch

    from ..classify.model import ClassifierMeta, build_backbone, predict_arrays, preprocess, save_classifier
    from .score import select_split

    torch.manual_seed(seed)
    fit = select_split(data, "fit", manifest)
    ds = fit
    x, y = fit.arrays()
    res = x.shape[1]
    meta = ClassifierMeta(backbone=backbone, classes=ds.classes, resolution=res)
    model = build_backbone(backbone, len(ds.classes))
    counts = np.bincount(y, minlength=len(ds.classes))
    weights = torch.tensor(1.0 / np.maximum(counts[y], 1), dtype=torch.double)
    g = torch.Generator().manual_seed(seed)
    steps = epochs * (len(y) // batch_size)
    steps = min(steps, max_steps) if max_steps else steps
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    idx = torch.multinomial(weights, steps * batch_size, replacement=True, generator=g).numpy()
    for step in range(steps):
        b = idx[step * batch_size:(step + 1) * batch_size]
        xb = x[b]
        if step % 2:  # a flip is the cheapest augmentation that still helps at 28 px
            xb = xb[:, :, ::-1]
        loss = torch.nn.functional.cross_entropy(model(preprocess(xb, meta)), torch.from_numpy(y[b]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    ref = select_split(data, "ref", manifest)
    xr, yr = ref.arrays()
    pred = predict_arrays(model, meta, xr).argmax(1)
    recall = {c: float((pred[yr == k] == k).mean()) if (yr == k).any() else None for k, c in enumerate(ds.classes)}
    save_classifier(model, out, backbone=backbone, classes=ds.classes, resolution=res,
                    config={"trainer": "tailsynth.monitor.drill.train_quick_classifier", "epochs": epochs},
                    train_class_counts={c: int(n) for c, n in zip(ds.classes, counts)})
    vals = [v for v in recall.values() if v is not None]
    return {"recall_ref": recall, "balanced_accuracy_ref": float(np.mean(vals)), "steps": steps}


def sample_window(records: list[dict], size: int, rng: np.random.Generator) -> list[dict]:
    """A window of SIZE records drawn without replacement from a live pool."""
    idx = rng.choice(len(records), size=min(size, len(records)), replace=False)
    return [records[i] for i in np.sort(idx)]
