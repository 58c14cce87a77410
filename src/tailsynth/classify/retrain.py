"""Classifier re-training (cRT, Kang et al. 2020): re-fit the last layer on class-balanced real data.

Decoupling representation from classifier: the backbone trained on instance-sampled data learns features from every
image; a head re-fitted on class-balanced draws of those (frozen) features stops favouring the head classes. The
features are computed once (plus each image's horizontal mirror, a free augmentation), so the re-fit takes seconds.
"""

from __future__ import annotations

import numpy as np

CRT_LR = 1e-3
CRT_BATCH = 256


def _features(model, X, mean, std, device, batch_size: int = 512):
    import torch

    out = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(X), batch_size):
            x = (X[i : i + batch_size].to(device).float().div_(255.0) - mean) / std
            for view in (x, torch.flip(x, dims=[3])):
                out.append(model.forward_head(model.forward_features(view), pre_logits=True).float().cpu())
    # views interleaved per batch: image i of a batch appears once per view
    return torch.cat(out)


def retrain_head(model, X, y, num_classes: int, mean, std, device, epochs: int, gen, val=None) -> dict:
    """Re-fit `model`'s classifier in place from a fresh initialisation; returns what was done (and, with
    `val=(X, y, classes)`, the val balanced accuracy before and after)."""
    import torch

    from ..metrics import classification_metrics
    from .samplers import draw

    def val_bacc():
        if val is None:
            return None
        from .train import predict_logits

        logits = predict_logits(model, val[0], mean, std, device)
        return classification_metrics(val[1], torch.softmax(logits, 1).numpy(), val[2])["balanced_accuracy"]

    before = val_bacc()
    feats = _features(model, X, mean, std, device)
    yb = np.asarray(y)
    # labels in the order _features emits them: per batch, the batch's images then their mirrors
    labels = np.concatenate([np.tile(yb[i : i + 512], 2) for i in range(0, len(yb), 512)])
    head = model.get_classifier()
    head.reset_parameters()
    for p in model.parameters():
        p.requires_grad_(False)
    for p in head.parameters():
        p.requires_grad_(True)
    opt = torch.optim.AdamW(head.parameters(), lr=CRT_LR, weight_decay=1e-4)
    steps = max(1, epochs * (len(labels) // CRT_BATCH))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    F_t, Y_t = feats.to(device), torch.from_numpy(labels).to(device)
    for _ in range(steps):
        idx = draw(labels, num_classes, "class-balanced", CRT_BATCH, gen).to(device)
        loss = torch.nn.functional.cross_entropy(head(F_t[idx]), Y_t[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    for p in model.parameters():
        p.requires_grad_(True)
    return {"epochs": int(epochs), "steps": int(steps), "batch": CRT_BATCH, "lr": CRT_LR, "views": "image + mirror",
            "sampler": "class-balanced", "val_balanced_accuracy_before": before,
            "val_balanced_accuracy": val_bacc()}
