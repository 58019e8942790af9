"""The dataset fingerprint: what the planner needs to know about a training split, read once and cached.

nnU-Net plans from a fingerprint of sizes, spacings and intensities; segkit's adds what 2-D folders vary in:
channels and alpha, bit depth, the stored mask values (0/255 masks are common), class shares and presence,
and object sizes per mask value (connected components), so patch and depth can be chosen to see whole objects,
and how each value's pixels split between the image halves, so test-time flips follow the data's symmetry.

Everything is computed on the raw files of the training split. Object and share statistics are kept per
*stored mask value*, so the planner can still change the value -> class mapping after fingerprinting.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from segkit.data.intensity import IntensityNormalization
from segkit.data.io import TIFF_SUFFIXES, read_image, read_mask

log = logging.getLogger(__name__)

VERSION = 3  # 3: pixels per mask value in each half of the image (the data's symmetry)
PIXELS_PER_IMAGE = 20_000  # intensity statistics from a fixed random sample of each image's pixels
MAX_COMPONENTS = 200  # object sizes kept per image and value (a random sample beyond that)
_PERCENTILES = IntensityNormalization("percentile", 0.5, 99.5)  # what read_image applies to high-bit images


def _stored_values(image: np.ndarray) -> np.ndarray:
    """Stored values as float (for the raw percentiles of high-bit images)."""
    return image.astype(np.float32)


def default_cache_dir() -> Path:
    """``$SEGKIT_CACHE_DIR`` or ``~/.cache/segkit``: fingerprints are keyed by content, so any folder will do."""
    return Path(os.environ.get("SEGKIT_CACHE_DIR") or Path.home() / ".cache" / "segkit") / "fingerprints"


def content_key(pairs: Sequence[tuple[Path, Path]]) -> str:
    """A hash of every image's and mask's bytes (and their order): the same data gets the same key wherever
    it lives, and a changed file a new one."""
    digest = hashlib.sha256(f"segkit-fingerprint-{VERSION}".encode())
    for image, mask in pairs:
        for path in (image, mask):
            digest.update(path.suffix.lower().encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:24]


def header(path: Path) -> tuple[int, str]:
    """``(channels as stored, dtype name)`` without decoding more than needed."""
    if path.suffix.lower() in TIFF_SUFFIXES:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            shape, dtype = page.shape, page.dtype
        channels = 1 if len(shape) == 2 else min(shape[0], shape[-1]) if len(shape) == 3 else 1
        return int(channels), np.dtype(dtype).name
    with Image.open(path) as image:
        mode = image.mode
        if mode == "P":
            mode = "RGBA" if "transparency" in image.info else "RGB"
    channels = {"1": 1, "L": 1, "LA": 2, "I": 1, "I;16": 1, "I;16B": 1, "F": 1, "RGB": 3, "RGBA": 4}.get(mode, 3)
    dtype = {"I;16": "uint16", "I;16B": "uint16", "I": "int32", "F": "float32"}.get(mode, "uint8")
    return channels, dtype


def _equal_channels(image: np.ndarray) -> bool:
    """An RGB image whose three channels are equal is grey in disguise (common for microscopy)."""
    return bool(np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2]))


def _component_sizes(mask: np.ndarray, value: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Areas and bounding-box long sides of the connected components (8-connected) of ``mask == value``."""
    labels, count = ndimage.label(mask == value, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return [], []
    areas = np.bincount(labels.ravel())[1:]
    sides = [max(s[0].stop - s[0].start, s[1].stop - s[1].start) for s in ndimage.find_objects(labels)]
    keep = np.arange(count)
    if count > MAX_COMPONENTS:
        keep = rng.choice(count, MAX_COMPONENTS, replace=False)
    return [int(areas[i]) for i in keep], [int(sides[i]) for i in keep]


def _summary(values: Sequence[float]) -> dict:
    if not len(values):
        return {}
    array = np.asarray(values, dtype=np.float64)
    p10, p50, p90 = np.percentile(array, [10, 50, 90])
    return {"min": float(array.min()), "p10": float(p10), "median": float(p50), "p90": float(p90),
            "max": float(array.max()), "count": int(array.size)}  # fmt: skip


HALVES = ("top", "bottom", "left", "right")


def _half_counts(mask: np.ndarray) -> dict[str, dict[int, int]]:
    """Pixels of each stored value in the top, bottom, left and right halves (a middle row or column in
    neither): a class found mostly in one half (sky above, road below) says the images have an up."""
    h, w = mask.shape[:2]
    parts = {"top": mask[: h // 2], "bottom": mask[h - h // 2 :], "left": mask[:, : w // 2],
             "right": mask[:, w - w // 2 :]}  # fmt: skip
    out = {}
    for half, part in parts.items():
        stored, counts = np.unique(part, return_counts=True)
        out[half] = dict(zip(stored.tolist(), counts.tolist(), strict=True))
    return out


def compute_fingerprint(pairs: Sequence[tuple[Path, Path]], seed: int = 0) -> dict:
    """Read every pair once and summarise it (see the module docstring for what and why)."""
    rng = np.random.default_rng(seed)
    heights, widths, channels, dtypes = [], [], [], set()
    for image_path, _ in pairs:  # headers only
        c, dtype = header(image_path)
        channels.append(c)
        dtypes.add(dtype)
    high_bit = any(d != "uint8" for d in dtypes)
    # Each image is decoded once, as RGB when any is stored with colour channels; the colour mode is decided
    # at the end (grey when every image's channels are equal) and the samples cut down to one channel then.
    read_mode = "rgb" if max(channels) >= 3 else "gray"
    grey = True

    samples: list[np.ndarray] = []
    raw_samples: list[np.ndarray] = []
    values: dict[int, dict] = {}
    for index, (image_path, mask_path) in enumerate(pairs):
        # What the network sees: 0..1, high-bit images through their percentiles
        image = read_image(image_path, read_mode, None if not high_bit else _PERCENTILES)
        grey = grey and (read_mode == "gray" or _equal_channels(image))
        image = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
        heights.append(image.shape[0])
        widths.append(image.shape[1])
        flat = image.reshape(-1, image.shape[-1])
        pick = rng.choice(flat.shape[0], min(PIXELS_PER_IMAGE, flat.shape[0]), replace=False)
        samples.append(flat[pick])
        if high_bit:
            raw = np.asarray(read_image(image_path, read_mode, _stored_values), dtype=np.float64)
            raw = raw.reshape(-1, raw.shape[-1])
            raw_samples.append(raw[rng.choice(raw.shape[0], min(PIXELS_PER_IMAGE, raw.shape[0]), replace=False)])
        mask = read_mask(mask_path)
        stored, counts = np.unique(mask, return_counts=True)
        halves = _half_counts(mask)
        for value, count in zip(stored.tolist(), counts.tolist(), strict=True):
            entry = values.setdefault(int(value), {"pixels": 0, "images": [], "areas": [], "sides": [],
                                                   "halves": dict.fromkeys(HALVES, 0)})  # fmt: skip
            entry["pixels"] += int(count)
            for half in HALVES:
                entry["halves"][half] += halves[half].get(int(value), 0)
            entry["images"].append(index)
            areas, sides = _component_sizes(mask, value, rng)
            entry["areas"] += areas
            entry["sides"] += sides

    color_mode = "gray" if grey else "rgb"
    pixels = np.concatenate(samples)[:, :1] if grey else np.concatenate(samples)
    raw_samples = [r[:, :1] for r in raw_samples] if grey else raw_samples
    total = sum(v["pixels"] for v in values.values())
    intensity = {
        "mean": pixels.mean(0).round(5).tolist(),
        "std": pixels.std(0).round(5).tolist(),
        "p0_5": np.percentile(pixels, 0.5, axis=0).round(5).tolist(),
        "p50": np.percentile(pixels, 50, axis=0).round(5).tolist(),
        "p99_5": np.percentile(pixels, 99.5, axis=0).round(5).tolist(),
    }
    if raw_samples:
        raw = np.concatenate(raw_samples)
        intensity["raw_p0_5"] = np.percentile(raw, 0.5, axis=0).round(3).tolist()
        intensity["raw_p99_5"] = np.percentile(raw, 99.5, axis=0).round(3).tolist()
    return {
        "version": VERSION,
        "images": len(pairs),
        "pixels": int(total),
        "height": _summary(heights),
        "width": _summary(widths),
        "fixed_size": len(set(zip(heights, widths, strict=True))) == 1,
        "stored_channels": sorted(set(channels)),
        "alpha": any(c in (2, 4) for c in channels),
        "color_mode": color_mode,
        "dtypes": sorted(dtypes),
        "intensity": intensity,
        "mask_values": {
            str(value): {
                "pixel_share": round(entry["pixels"] / total, 6),
                "image_share": round(len(entry["images"]) / len(pairs), 4),
                "object_area": _summary(entry["areas"]),
                "object_side": _summary(entry["sides"]),
                "halves": entry["halves"],
            }
            for value, entry in sorted(values.items())
        },
    }


def fingerprint(pairs: Sequence[tuple[Path, Path]], cache_dir: Path | None = None) -> dict:
    """The fingerprint of ``pairs`` (image, mask paths), from the cache when the same content was seen before.

    The result also names its ``key`` and the seconds it took (``seconds``, 0 when cached).
    """
    if not pairs:
        raise ValueError("cannot fingerprint an empty training split")
    key = content_key(pairs)
    cache = (cache_dir or default_cache_dir()) / f"{key}.json"
    if cache.is_file():
        found = json.loads(cache.read_text())
        if found.get("version") == VERSION:
            log.info("Fingerprint %s from the cache (%s)", key, cache)
            return {**found, "seconds": 0.0}
    start = time.perf_counter()
    result = {"key": key, **compute_fingerprint(pairs)}
    result["seconds"] = round(time.perf_counter() - start, 2)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(cache)
    except OSError as err:  # a read-only home is no reason not to plan
        log.warning("Could not cache the fingerprint in %s: %s", cache.parent, err)
    log.info("Fingerprint of %d images in %.1f s (key %s)", len(pairs), result["seconds"], key)
    return result
