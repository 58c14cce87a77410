"""Reference records: the deployed model's records on real validation data, stored beside the model.

Building the reference also fits the embedding projection (PCA of penultimate features on these same
images), so that reference and live records share one low-dimensional space.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..predictions import MONITOR_DIR
from .records import REFERENCE_FILE


def reference_path(model: str | Path) -> Path:
    return Path(model) / MONITOR_DIR / REFERENCE_FILE


def build_reference(model: str | Path, data: str | Path, split: str = "val", splits: str | Path | None = None,
                    dims: int = 5, out: str | Path | None = None) -> dict:
    """Fit the embedding on SPLIT of DATA, write MODEL/monitor/{embedding.npz, reference.jsonl, reference.json}."""
    import numpy as np
    import torch

    from ..classify.model import load_classifier, predict_arrays
    from ..data.records import resize_rgb
    from ..hashing import model_version
    from ..predictions import Embedder, JsonlSink
    from .score import load_split, score_arrays

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    net, meta = load_classifier(model)
    part, images, labels = load_split(data, split, splits)
    res = int(meta.resolution)
    model_in = images if images.shape[1:3] == (res, res) else np.stack([resize_rgb(im, res) for im in images])
    _, feats, _ = predict_arrays(net, meta, model_in, features=True)
    embedder = Embedder.fit(feats, dims=dims)
    embedder.save(model)
    recs = score_arrays(net, meta, images, embedder=embedder, version=model_version(model), labels=labels,
                        request_ids=[f"ref:{r.image_id}" for r in part.records],
                        source=f"reference {Path(data).name}:{split}")
    path = Path(out) if out else reference_path(model)
    if path.exists():
        path.unlink()  # a reference is rebuilt whole, never appended to
    JsonlSink(path).write(recs)
    info = {"data": str(data), "split": split, "records": len(recs), "embedding_dims": embedder.dims,
            "explained_variance": float(embedder.explained_variance_ratio.sum()),
            "model_version": recs[0]["model_version"] if recs else None, "reference": str(path)}
    (path.parent / "reference.json").write_text(json.dumps(info, indent=2))
    return info
