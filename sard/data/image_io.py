"""Reading images and label images with clear errors and format conversion.

Every image entering the data pipeline goes through :func:`read_image`, which returns an
(H, W, 3) uint8 RGB array whatever the file holds:

* grayscale (L, I;16, I, F) is replicated to three channels;
* RGBA / LA / P (palette) is converted to RGB (alpha dropped, palette expanded);
* 16-bit and float data are stretched linearly so the 0.5th..99.5th percentile range maps to
  0..255 (microscopy and thermal images rarely span the full 16-bit range, so a plain ``/257``
  would give a black image).

JPEGs with an EXIF orientation are rotated upright (as detectron2's reader does), and
:func:`image_size` reports the upright size. Missing, unreadable or truncated files raise an
error that names the file and the reason, as do float images holding NaN or infinity (they
would decode as black) and images too large for PIL's decompression-bomb guard.
"""

from __future__ import annotations

import os
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sard.user_errors import UserError

PathLike = Union[str, os.PathLike]

# Percentiles used to map high-bit-depth intensities to 0..255.
STRETCH_LOW_PERCENTILE = 0.5
STRETCH_HIGH_PERCENTILE = 99.5
EXIF_ORIENTATION_TAG = 0x0112
ROTATING_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


class ImageReadError(UserError, ValueError):
    """An image file exists but cannot be decoded (corrupt, truncated or unsupported)."""


def _too_large(path: str, err: Exception) -> ImageReadError:
    return ImageReadError(
        f"{path}: image too large to decode safely ({err}); split it into smaller images, or "
        "raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file"
    )


def _open_fully(path: PathLike) -> Image.Image:
    """Open and fully decode ``path``; PIL is lazy, so truncation only shows up on ``load``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        img = Image.open(path)
        img.load()
    except Image.DecompressionBombError as err:
        raise _too_large(path, err) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ImageReadError(f"{path}: unreadable or truncated image ({err})") from err
    return img


def stretch_to_uint8(array: np.ndarray) -> np.ndarray:
    """Map a high-bit-depth array to uint8: ``clip((a - p_lo) / (p_hi - p_lo), 0, 1) * 255``.

    ``p_lo``/``p_hi`` are the 0.5th and 99.5th percentiles of the array; a constant array maps
    to 0.
    """
    a = array.astype(np.float64)
    lo, hi = np.percentile(a, [STRETCH_LOW_PERCENTILE, STRETCH_HIGH_PERCENTILE])
    if hi <= lo:
        hi = a.max()
        lo = a.min()
    if hi <= lo:
        return np.zeros(a.shape, dtype=np.uint8)
    return (np.clip((a - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def to_rgb_uint8(array: np.ndarray, source: str = "<array>") -> np.ndarray:
    """Convert an (H, W), (H, W, 1|2|3|4) array of any dtype to (H, W, 3) uint8."""
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim == 3 and array.shape[2] == 4:
        array = array[..., :3]  # alpha carries no appearance; drop it rather than composite
    if array.ndim == 3 and array.shape[2] == 2:
        array = array[..., 0]  # gray + alpha
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] != 3):
        raise ImageReadError(f"{source}: unsupported image shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int(array.size - np.isfinite(array).sum())
        raise ImageReadError(
            f"{source}: float image holds {bad} NaN or infinite pixel value(s), which would "
            "decode as black; replace them (e.g. with the image's minimum) and save it again"
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif array.dtype != np.uint8:
        array = stretch_to_uint8(array)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array)


def read_image(path: PathLike) -> np.ndarray:
    """Read ``path`` as an (H, W, 3) uint8 RGB array (see the module docstring for conversions).

    Raises FileNotFoundError if the file is missing and ImageReadError if it cannot be decoded.
    """
    img = _open_fully(path)
    source = os.fspath(path)
    if _exif_orientation(img) > 1:
        img = ImageOps.exif_transpose(img)  # as detectron2 does: pixels as a viewer shows them
    if img.mode in ("RGB", "L", "1"):
        array = np.asarray(img.convert("RGB") if img.mode != "RGB" else img)
        return np.ascontiguousarray(array)
    if img.mode in ("RGBA", "LA", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX", "La"):
        return np.ascontiguousarray(np.asarray(img.convert("RGB")))
    # 16-bit / 32-bit integer and float modes (I;16, I;16B, I, F, ...)
    return to_rgb_uint8(np.asarray(img), source)


def read_label_image(path: PathLike) -> np.ndarray:
    """Read an integer label image (0 = background, k > 0 = instance k) as an (H, W) int64 array.

    Accepts 8/16/32-bit single-channel PNG/TIFF; raises ImageReadError for colour images and
    float data, since those are not label maps.
    """
    img = _open_fully(path)
    source = os.fspath(path)
    array = np.asarray(img)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise ImageReadError(
            f"{source}: expected a single-channel integer label image, got mode {img.mode} "
            f"with shape {array.shape}"
        )
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ImageReadError(f"{source}: label image holds non-integer float values")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    labels = array.astype(np.int64)
    if labels.min() < 0:
        raise ImageReadError(f"{source}: label image holds negative values")
    return labels


def image_size(path: PathLike) -> tuple[int, int]:
    """(height, width) from the file header without decoding the pixels."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    try:
        with Image.open(path) as img:
            width, height = img.size
            if _exif_orientation(img) in ROTATING_ORIENTATIONS:
                width, height = height, width
    except Image.DecompressionBombError as err:
        raise _too_large(path, err) from None
    except (UnidentifiedImageError, OSError) as err:
        raise ImageReadError(f"{path}: unreadable image ({err})") from err
    return height, width


def _exif_orientation(img: Image.Image) -> int:
    """EXIF orientation tag (1 = upright) or 1 when absent/unreadable."""
    try:
        return int(img.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except Exception:  # malformed EXIF must not make an image unreadable
        return 1
