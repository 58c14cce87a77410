"""Compositing around the model: the harmonize mode's pasted source lesion, and the paste-back of the model's
output into the background.

Paste-back: the model sees the background with the mask region blanked; its output is blended back with
alpha = 1 deep inside the mask, falling linearly to 0 over `feather` pixels at the mask edge, and exactly
0 outside. So every pixel where the mask is 0 equals the background byte for byte (tolerance 0); within
`feather` px inside the mask edge pixels are a blend of background and generated lesion.
"""

from __future__ import annotations

import numpy as np


def composite_lesion(background: np.ndarray, bg_mask: np.ndarray, source: np.ndarray, src_mask: np.ndarray,
                     rot: int, flip: bool, dilate: int) -> tuple[np.ndarray, np.ndarray]:
    """(composite uint8, region bool). The source lesion (turned by `rot` quarter turns, optionally flipped) is
    pasted with its own mask; the rest of the region (the union of both lesions, dilated) is filled with the
    background's skin colour (median outside the region), so neither the background's own lesion nor the source's
    surrounding skin is left for the model to blend around."""
    from scipy import ndimage as ndi

    src, sm = np.rot90(source, rot), np.rot90(src_mask, rot)
    if flip:
        src, sm = src[:, ::-1], sm[:, ::-1]
    region = sm | bg_mask
    if dilate:
        region = ndi.binary_dilation(region, iterations=dilate)
    out = background.copy()
    skin = background[~region] if (~region).any() else background.reshape(-1, 3)
    out[region] = np.median(skin, axis=0).round().astype(np.uint8)
    out[sm] = src[sm]
    return out, region


def blend_alpha(mask: np.ndarray, feather: float) -> np.ndarray:
    """1 deep inside the mask, linear to 0 over `feather` px at its edge, exactly 0 outside."""
    from scipy import ndimage as ndi

    if feather <= 0:
        return mask.astype(np.float32)
    dist = ndi.distance_transform_edt(mask)  # distance to the nearest pixel outside the mask
    return np.clip(dist / feather, 0, 1).astype(np.float32) * mask


def paste_back(background: np.ndarray, generated: np.ndarray, mask: np.ndarray, feather: float) -> np.ndarray:
    a = blend_alpha(mask, feather)[..., None]
    out = a * generated.astype(np.float32) + (1 - a) * background.astype(np.float32)
    out = np.clip(np.round(out), 0, 255).astype(np.uint8)
    out[~mask] = background[~mask]  # exact by construction; stated so no float path can leak
    return out
