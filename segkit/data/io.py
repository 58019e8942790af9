"""Reading images and masks from disk with errors that name the file and the problem."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")


def natural_key(text: str) -> list:
    """Sort key that puts ``2`` before ``10`` (file stems are often slice numbers)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def list_images(folder: Path) -> dict[str, Path]:
    """Map file stem -> path for every image file in ``folder`` (not recursive), in natural order."""
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    by_stem: dict[str, Path] = {}
    for path in sorted(files, key=lambda p: natural_key(p.stem)):
        if path.stem in by_stem:
            raise ValueError(f"two files share the stem {path.stem!r}: {by_stem[path.stem]} and {path}")
        by_stem[path.stem] = path
    return by_stem


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()  # decode now, so a truncated file fails here and not inside a worker later
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: the file is corrupt or not an image ({err})") from err
    return image


def image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` of an image, read from its header only."""
    try:
        with Image.open(path) as image:
            w, h = image.size
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"cannot read image {path}: the file is corrupt or not an image ({err})") from err
    return h, w


def read_image(path: Path, color_mode: str = "rgb") -> np.ndarray:
    """Read an image as uint8 ``(H, W, 3)`` (``"rgb"``; alpha dropped) or ``(H, W, 1)`` (``"gray"``)."""
    if color_mode not in ("rgb", "gray"):
        raise ValueError(f"color_mode must be 'rgb' or 'gray', got {color_mode!r}")
    image = _open(path)
    if image.mode in ("I;16", "I;16B", "I", "F"):
        raise ValueError(f"{path}: {image.mode} (16/32-bit) images are not supported; convert them to 8-bit")
    array = np.array(image.convert("RGB" if color_mode == "rgb" else "L"))
    return array if color_mode == "rgb" else array[..., None]


def read_mask(path: Path) -> np.ndarray:
    """Read a label mask as an integer ``(H, W)`` array of the stored values (palette masks give indices)."""
    image = _open(path)
    array = np.array(image)
    if array.ndim == 3:
        if array.shape[2] >= 3 and not (
            np.array_equal(array[..., 0], array[..., 1]) and np.array_equal(array[..., 0], array[..., 2])
        ):
            raise ValueError(
                f"mask {path} is a colour image ({image.mode}); store masks as single-channel or palette "
                "PNGs whose values are class indices"
            )
        array = array[..., 0]
    return array
