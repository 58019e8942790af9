"""Reading images and masks from disk with errors that name the file and the problem."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from segkit.data.intensity import DEFAULT_HIGH_BIT, IntensityNormalization

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")
TIFF_SUFFIXES = (".tif", ".tiff")
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # little/big endian, classic/BigTIFF
ORIENTATION = 0x0112  # EXIF: how a viewer turns the stored pixels; 5-8 swap width and height
EIGHT_BIT_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R 601-2, what PIL's convert("L") uses
_warned_default_intensity = False


def natural_key(text: str) -> list:
    """Sort key that puts ``2`` before ``10`` (file stems are often slice numbers)."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def hidden(path: Path) -> bool:
    """Hidden files and folders, and the ``__MACOSX`` folder a zip made on a Mac holds: copying or unzipping
    there leaves ``._0001.png`` beside ``0001.png``, an AppleDouble file under an image's name."""
    return path.name.startswith(".") or path.name == "__MACOSX"


def list_images(folder: Path) -> dict[str, Path]:
    """Map file stem -> path for every image file in ``folder`` (not recursive), in natural order."""
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not hidden(p)]
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    by_stem: dict[str, Path] = {}
    for path in sorted(files, key=lambda p: natural_key(p.stem)):
        if path.stem in by_stem:
            raise ValueError(f"two files share the stem {path.stem!r}: {by_stem[path.stem]} and {path}")
        by_stem[path.stem] = path
    return by_stem


Source = Path | BinaryIO  # a file, or an upload held in memory (never written to disk)


def _open(path: Source, name: object = None) -> Image.Image:
    name = path if name is None else name
    if not isinstance(path, Path):
        path.seek(0)
    try:
        image = Image.open(path)
        image.load()  # decode now, so a truncated file fails here and not inside a worker later
    except FileNotFoundError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        why = str(err).replace(repr(path), str(name))  # PIL names an in-memory upload by its object's repr
        raise ValueError(f"cannot read image {name}: the file is corrupt or not an image ({why})") from err
    if _orientation(image) != 1:
        ImageOps.exif_transpose(image, in_place=True)
    return image


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation a viewer applies (1: as stored). A phone stores a portrait photo sideways and
    says so here; every viewer, annotation tool and OpenCV's ``imread`` shows it upright, so its mask is
    drawn upright, and segkit reads it upright too. TIFFs are left as stored: their high-bit path
    (tifffile) does not turn them, and one folder must not read two ways."""
    if image.format == "TIFF":
        return 1
    try:
        return int(image.getexif().get(ORIENTATION, 1))
    except Exception:  # a malformed EXIF block: the pixels as stored
        return 1


def _read_tiff(path: Source, name: object = None) -> np.ndarray:
    """Read a TIFF PIL cannot hold (float, multi-channel 16-bit) with tifffile, channels last."""
    import tifffile

    name = path if name is None else name
    if not isinstance(path, Path):
        path.seek(0)
    try:
        array = tifffile.imread(path, key=0)
    except Exception as err:
        raise ValueError(f"cannot read image {name}: the file is corrupt or not an image ({err})") from err
    if array.ndim == 3 and array.shape[0] <= 4 < array.shape[-1]:  # planar (C, H, W) -> (H, W, C)
        array = np.moveaxis(array, 0, -1)
    if array.ndim not in (2, 3):
        raise ValueError(f"{name}: expected a 2-D image (H, W) or (H, W, C), got an array of shape {array.shape}")
    return array


def image_size(path: Path) -> tuple[int, int]:
    """``(H, W)`` of an image, read from its header only."""
    try:
        with Image.open(path) as image:
            w, h = image.size
            if _orientation(image) in (5, 6, 7, 8):  # shown turned by 90 degrees
                w, h = h, w
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        if path.suffix.lower() in TIFF_SUFFIXES:
            return _read_tiff(path).shape[:2]
        raise ValueError(f"cannot read image {path}: the file is corrupt or not an image ({err})") from err
    return h, w


def _to_channels(array: np.ndarray, color_mode: str, path: object) -> np.ndarray:
    """A high-bit ``(H, W[, C])`` array to ``(H, W, 3)`` (rgb) or ``(H, W, 1)`` (gray), alpha dropped."""
    if array.ndim == 2:
        array = array[..., None]
    channels = array.shape[2]
    if channels in (2, 4):  # grey + alpha, RGB + alpha
        array, channels = array[..., : channels - 1], channels - 1
    if channels not in (1, 3):
        raise ValueError(f"{path}: {channels}-channel images are not supported (1 or 3 channels, plus alpha)")
    if color_mode == "rgb":
        return np.repeat(array, 3, axis=2) if channels == 1 else array
    if channels == 1:
        return array
    return (array.astype(np.float32) @ LUMA)[..., None]


def read_image(path: Path, color_mode: str = "rgb", intensity: IntensityNormalization | None = None) -> np.ndarray:
    """Read an image as ``(H, W, 3)`` (``"rgb"``; alpha dropped) or ``(H, W, 1)`` (``"gray"``).

    8-bit images come back as uint8, unchanged. 16-bit, 32-bit and float images (PNG, TIFF) come back as
    float32 in [0, 1] through ``intensity`` (default: per-image 0.5-99.5 percentiles, logged once). With
    ``intensity`` given, every image goes through it, so a folder mixing bit depths is scaled one way.
    """
    return _decode(path, path.suffix.lower() in TIFF_SUFFIXES, path, color_mode, intensity)


def read_image_bytes(data: bytes, name: str, color_mode: str = "rgb",
                     intensity: IntensityNormalization | None = None) -> np.ndarray:  # fmt: skip
    """:func:`read_image` for an encoded image held in memory (an upload to the server): the same decoding and
    errors, with ``name`` in the messages, and nothing written to disk."""
    if not data:
        raise ValueError(f"{name}: empty upload (0 bytes)")
    return _decode(io.BytesIO(data), data[:4] in TIFF_MAGIC, name, color_mode, intensity)


def _decode(path: Source, tiff: bool, name: object, color_mode: str,
            intensity: IntensityNormalization | None) -> np.ndarray:  # fmt: skip
    if color_mode not in ("rgb", "gray"):
        raise ValueError(f"color_mode must be 'rgb' or 'gray', got {color_mode!r}")
    if tiff:
        array = _read_tiff(path, name)  # PIL silently truncates 16-bit RGB TIFFs to 8 bits; tifffile does not
        pil = array.dtype == np.uint8 and (array.ndim == 2 or array.shape[2] <= 4)
        image = _open(path, name) if pil else None  # 8-bit: PIL's conversions, as for PNGs
    else:
        image = _open(path, name)
        if image.mode not in EIGHT_BIT_MODES:  # I;16, I, F
            array, image = np.array(image), None
    if image is not None:
        array = np.array(image.convert("RGB" if color_mode == "rgb" else "L"))
        array = array if color_mode == "rgb" else array[..., None]
        if intensity is None:
            return array
    if intensity is None:
        global _warned_default_intensity
        if not _warned_default_intensity:
            log.warning(
                "%s is %s, not 8-bit: scaling each such image by its 0.5-99.5 percentiles (set the dataset's "
                "intensity, e.g. {mode: range, low: 0, high: 65535}, to choose)",
                name,
                array.dtype,
            )
            _warned_default_intensity = True
        intensity = DEFAULT_HIGH_BIT
    return intensity(_to_channels(array, color_mode, name))


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
