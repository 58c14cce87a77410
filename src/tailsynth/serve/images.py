"""Validate and decode untrusted image bytes into the model's uint8 input.

Every check names the image at fault; all failures raise BadInput, which the transformer turns into HTTP 400.
Dimensions are read from the header *before* decoding, so a small file that claims a huge canvas
(a decompression bomb) is refused without allocating it.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np

ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")


class BadInput(ValueError):
    """A request or image the server refuses (client error, 4xx); the message names the item at fault."""


@dataclass(frozen=True)
class Limits:
    max_image_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000        # dermoscopy images are at most ~6000 x 4000
    max_side: int = 12_000
    max_batch: int = 32
    max_body_bytes: int = 64 * 1024 * 1024


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def decode_image(data: bytes, resolution: int, name: str = "image", limits: Limits = Limits()) -> np.ndarray:
    """Bytes of a JPEG/PNG/... -> resolution x resolution x 3 uint8 RGB (bilinear, as the training data reader)."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BadInput(f"{name}: expected image bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise BadInput(f"{name}: empty image")
    if len(data) > limits.max_image_bytes:
        raise BadInput(f"{name}: {len(data)} bytes exceeds the limit of {limits.max_image_bytes} bytes per image")
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadInput(f"{name}: not a decodable image (expected one of {', '.join(ALLOWED_FORMATS)})") from None
    except Exception as e:  # PIL raises assorted errors on malformed headers
        raise BadInput(f"{name}: unreadable image header ({e})") from None
    with im:
        if im.format not in ALLOWED_FORMATS:
            raise BadInput(f"{name}: image format {im.format} not accepted (expected one of {', '.join(ALLOWED_FORMATS)})")
        w, h = im.size
        if w < 1 or h < 1:
            raise BadInput(f"{name}: empty image dimensions {w}x{h}")
        if w > limits.max_side or h > limits.max_side or w * h > limits.max_pixels:
            raise BadInput(f"{name}: {w}x{h} pixels exceeds the limit ({limits.max_side} px per side, "
                           f"{limits.max_pixels} pixels); refused as a possible decompression bomb")
        try:
            # PIL's own bomb check is a second line of defence for formats whose header under-reports.
            im.load()
            rgb = im.convert("RGB")
        except Image.DecompressionBombError as e:
            raise BadInput(f"{name}: refused as a decompression bomb ({e})") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise BadInput(f"{name}: corrupt or truncated {im.format} data ({e})") from None
    return np.array(rgb.resize((resolution, resolution), Image.BILINEAR), dtype=np.uint8)


def image_stats(img: np.ndarray) -> dict:
    """Cheap per-image statistics for drift monitoring (Evidently has no image type), of the model input.

    The monitoring package's definition wins when it is installed, so serving and reference agree."""
    try:
        from ..monitor.records import image_statistics
    except ImportError:
        image_statistics = None
    if image_statistics is not None:
        return image_statistics(img)
    x = img.reshape(-1, 3).astype(np.float32)
    mean = x.mean(0)
    return {"mean_r": float(mean[0]), "mean_g": float(mean[1]), "mean_b": float(mean[2]),
            "std": float(x.std()), "brightness": float(mean.mean())}
