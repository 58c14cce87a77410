"""Validate and decode untrusted image bytes into the model's uint8 input.

Every check names the image at fault; all failures raise BadInput, which the transformer turns into HTTP 400.
Dimensions are read from the header *before* decoding, so a small file that claims a huge canvas
(a decompression bomb) is refused without allocating it, and the work a request will cost (its total pixels)
is known before any of it is done.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np

ALLOWED_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "WEBP")
# Modes PIL converts to RGB without losing the meaning of the values (palette, alpha, CMYK, YCbCr, 1-bit, grey).
_DIRECT_MODES = ("RGB", "RGBA", "RGBX", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr", "La", "RGBa")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


class BadInput(ValueError):
    """A request or image the server refuses (client error, 4xx); the message names the item at fault."""


@dataclass(frozen=True)
class Limits:
    max_image_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000        # dermoscopy images are at most ~6000 x 4000
    max_side: int = 12_000
    min_side: int = 28                   # the data layer's smallest image (DermaMNIST); below it there is no lesion
    max_batch: int = 32
    max_body_bytes: int = 64 * 1024 * 1024
    # Work per request: a 5 KB 1-bit PNG can claim 40 Mpx, so the header-declared pixels of the whole batch are
    # capped, and a request above `heavy_request_pixels` is decoded in a single "heavy lane" so that a few such
    # requests cannot starve ordinary ones (see tailsynth.serve.transformer).
    max_request_pixels: int = 64_000_000
    heavy_request_pixels: int = 8_000_000
    max_heavy_queue: int = 2
    # Images above this size are reduced while decoding (JPEG DCT scaling, integer box reduction), which bounds
    # the memory of one decode; below it decoding is exact, as the training data reader.
    reduce_above_pixels: int = 8_000_000


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _open(data, name: str, limits: Limits):
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
    if im.format not in ALLOWED_FORMATS:
        im.close()
        raise BadInput(f"{name}: image format {im.format} not accepted (expected one of {', '.join(ALLOWED_FORMATS)})")
    w, h = im.size
    problem = None
    if w < 1 or h < 1:
        problem = f"{name}: empty image dimensions {w}x{h}"
    elif w > limits.max_side or h > limits.max_side or w * h > limits.max_pixels:
        problem = (f"{name}: {w}x{h} pixels exceeds the limit ({limits.max_side} px per side, "
                   f"{limits.max_pixels} pixels); refused as a possible decompression bomb")
    elif min(w, h) < limits.min_side:
        problem = f"{name}: {w}x{h} pixels is too small (each side must be at least {limits.min_side} px)"
    elif im.mode not in _DIRECT_MODES + _SIXTEEN_BIT_MODES + ("I",):
        problem = (f"{name}: pixel mode {im.mode} not accepted (expected 8-bit RGB, grey or palette, "
                   "or 16-bit grey)")
    if problem:
        im.close()
        raise BadInput(problem)
    return im


def _to_rgb(im, name: str):
    """A PIL image of any accepted mode -> RGB with the values' meaning kept (16-bit grey scaled, not clipped)."""
    from PIL import Image

    if im.mode in _SIXTEEN_BIT_MODES or im.mode == "I":
        a = np.asarray(im)
        if a.min() < 0 or a.max() > 65535:
            raise BadInput(f"{name}: {im.mode} pixel values outside 0..65535; only 8- and 16-bit images are accepted")
        # 65535 / 257 = 255: the full 16-bit range maps onto the full 8-bit range.
        grey = np.rint(a.astype(np.float32) / 257.0).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return im.convert("RGB")


def open_image(data, name: str = "image", limits: Limits = Limits()):
    """The header checks of decode_image, without decoding: a PIL image for decode_opened (which closes it).

    The transformer opens every image of a request first, so the request's total pixels are known (and refused
    when too many) before any decoding, and then decodes from the same handles instead of parsing headers twice."""
    return _open(data, name, limits)


def open_batch(items, limits: Limits = Limits()) -> tuple[list, int]:
    """[(item name, image bytes)] -> (opened PIL images, the request's total pixels), from the headers alone.

    The one admission check of a request, shared by the transformer and the ensemble's preprocess model: the
    batch size, every image's own limits, then the request's pixel budget; nothing is decoded yet. On refusal the
    images opened so far are closed and BadInput names the item or the request."""
    if not items:
        raise BadInput("empty batch: send at least one image")
    if len(items) > limits.max_batch:
        raise BadInput(f"batch of {len(items)} images exceeds the limit of {limits.max_batch}")
    opened, pixels = [], 0
    try:
        for name, b in items:
            im = _open(b, name, limits)
            opened.append(im)
            pixels += im.size[0] * im.size[1]
        if pixels > limits.max_request_pixels:
            raise BadInput(f"request of {len(items)} images holds {pixels} pixels, over the limit of "
                           f"{limits.max_request_pixels} per request; send smaller images or fewer per request")
    except BadInput:
        for im in opened:
            im.close()
        raise
    return opened, pixels


def decode_batch(opened: list, names: list[str], resolution: int, limits: Limits = Limits(),
                 jpeg_draft: bool = False) -> np.ndarray:
    """Images from open_batch -> N x resolution x resolution x 3 uint8 (decode_opened each); closes them all."""
    try:
        return np.stack([decode_opened(im, resolution, name, limits, jpeg_draft) for name, im in zip(names, opened)])
    finally:
        for im in opened:  # the ones not reached after a failure (decode_opened closes its own)
            im.close()


def decode_image(data: bytes, resolution: int, name: str = "image", limits: Limits = Limits(),
                 jpeg_draft: bool = False) -> np.ndarray:
    """Bytes of a JPEG/PNG/... -> resolution x resolution x 3 uint8 RGB (bilinear, as the training data reader).

    jpeg_draft: let the JPEG decoder scale by 1/2, 1/4 or 1/8 in the DCT (PIL `draft`) to the smallest size still
    at least `resolution`, then resize bilinearly as usual. Most of a JPEG decode is the inverse DCT and colour
    conversion of every pixel; a 180 px ISIC image served at 28 px is decoded at 45 px, about 16x fewer pixels.
    On the ISIC sample the result differs from the exact decode by 0.5 grey levels on average (99th percentile
    3 levels), and 1 of 64 top-1 answers of the main job's model changed (docs/results/performance/serving.md), so
    it is opt-in: the default, jpeg_draft=False, gives the training reader's exact pixels
    (tests/serving/test_images_records.py), i.e. the answers the model was validated with."""
    return decode_opened(_open(data, name, limits), resolution, name, limits, jpeg_draft)


def decode_opened(im, resolution: int, name: str = "image", limits: Limits = Limits(),
                  jpeg_draft: bool = False) -> np.ndarray:
    """An image from open_image -> resolution x resolution x 3 uint8 RGB (see decode_image); closes IM."""
    from PIL import Image

    with im:
        w, h = im.size
        try:
            big = w * h > limits.reduce_above_pixels
            if im.format == "JPEG" and jpeg_draft:
                im.draft("RGB", (resolution, resolution))
            elif big and im.format == "JPEG":
                im.draft("RGB", (resolution * 8, resolution * 8))  # DCT scaling: decodes at 1/2..1/8 size
            # PIL's own bomb check is a second line of defence for formats whose header under-reports.
            im.load()
            if big:
                if im.mode == "1":
                    im = im.convert("L")
                factor = max(1, min(im.size) // (resolution * 8))
                if factor > 1 and im.mode in ("L", "RGB", "RGBA", "LA", "I;16", "I"):
                    im = im.reduce(factor)
            rgb = _to_rgb(im, name)
        except BadInput:
            raise
        except Image.DecompressionBombError as e:
            raise BadInput(f"{name}: refused as a decompression bomb ({e})") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise BadInput(f"{name}: corrupt or truncated {im.format} data ({e})") from None
    return np.array(rgb.resize((resolution, resolution), Image.BILINEAR), dtype=np.uint8)
