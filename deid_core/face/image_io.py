"""Image files and arrays at the API boundary: uint8 H×W×3 RGB, one reader and one writer.

Input images (:func:`to_rgb_uint8`): uint8 H×W×3 RGB (BGR with ``order="bgr"``); grayscale
H×W or H×W×1 is replicated to 3 channels; 4-channel RGBA/BGRA drops the alpha channel (the
stored colour values are kept, no compositing); anything else (float, uint16, bool, other
shapes) raises :class:`DeidError` naming the shape and dtype. :func:`read_image` applies the
EXIF orientation; :func:`write_image` writes atomically (:func:`deid_core.paths.atomic_write`).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deid_core import paths
from deid_core.errors import DeidError


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


# ----------------------------------------------------------------------------------------
# Input conversion.
def to_rgb_uint8(image: Any, order: str = "rgb", name: str = "image") -> np.ndarray:
    """The one input rule: return a contiguous uint8 H×W×3 RGB array (see module doc).

    ``order`` is the channel order of 3/4-channel input, ``"rgb"`` (default) or ``"bgr"``
    (OpenCV). Grayscale is replicated, alpha is dropped, float/other dtypes are refused.
    """
    if order not in ("rgb", "bgr"):
        raise DeidError(f"{name}: channel order must be 'rgb' or 'bgr', got {order!r}")
    if hasattr(image, "mode") and hasattr(image, "convert"):  # PIL image
        image = _pil_to_array(image, name)
    if not isinstance(image, np.ndarray):
        raise DeidError(f"{name}: expected a numpy uint8 image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        hint = (" (float images are not accepted: convert with "
                "(x * 255).round().astype(np.uint8) if they are in [0, 1])"
                if np.issubdtype(image.dtype, np.floating) else "")
        raise DeidError(f"{name}: expected dtype uint8, got {image.dtype} with shape "
                        f"{image.shape}{hint}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        image = image[:, :, :3]
        if order == "bgr":
            image = image[:, :, ::-1]
    else:
        raise DeidError(f"{name}: expected H×W, H×W×1, H×W×3 or H×W×4 uint8, got shape "
                        f"{image.shape} dtype {image.dtype}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise DeidError(f"{name}: empty image of shape {image.shape}")
    return np.ascontiguousarray(image)


def _pil_to_array(img: Any, name: str) -> np.ndarray:
    if img.mode in ("RGB", "L", "RGBA"):
        return np.asarray(img)
    if img.mode in ("P", "LA", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1"):
        return np.asarray(img.convert("RGBA" if "A" in img.mode or img.mode == "P" else "RGB"))
    raise DeidError(f"{name}: unsupported image mode {img.mode!r} (expected 8-bit RGB, RGBA "
                    f"or grayscale)")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file (EXIF orientation applied) as uint8 RGB with :func:`to_rgb_uint8`."""
    path = Path(path)
    if not path.is_file():
        raise DeidError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DeidError(f"cannot read image {path}: {exc}") from exc
    return to_rgb_uint8(img, name=str(path))


def write_image(path: str | os.PathLike, image: np.ndarray, quality: int = 95) -> Path:
    """Write uint8 RGB atomically (temp file in the same folder, then ``os.replace``)."""
    path = Path(path)
    kwargs = {"quality": quality} if path.suffix.lower() in (".jpg", ".jpeg", ".webp") else {}
    try:
        with paths.atomic_write(path) as tmp:
            Image.fromarray(to_rgb_uint8(image)).save(tmp, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise DeidError(f"cannot write image {path}: {exc}") from exc
    return path
