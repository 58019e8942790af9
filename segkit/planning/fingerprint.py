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
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from segkit.data.intensity import IntensityNormalization
from segkit.data.io import TIFF_SUFFIXES, read_image, read_mask

log = logging.getLogger(__name__)

VERSION = 7  # 3: pixels per mask value in each half of the image (the data's symmetry); 4: a generator per pair;
# 5: grey statistics of colour folders (for a typed ``color_mode=gray``); 6: ``scaling`` (a typed intensity);
# 7: photos read upright by their EXIF orientation (sizes and halves as shown)
LUMA = np.array([0.299, 0.587, 0.114])  # how read_image (PIL's "L") turns RGB into grey
PIXELS_PER_IMAGE = 20_000  # intensity statistics from a fixed random sample of each image's pixels
MAX_COMPONENTS = 200  # object sizes kept per image and value (a random sample beyond that)
_PERCENTILES = IntensityNormalization("percentile", 0.5, 99.5)  # what read_image applies to high-bit images


def _stored_values(image: np.ndarray) -> np.ndarray:
    """Stored values as float (for the raw percentiles of high-bit images)."""
    return image.astype(np.float32)


def default_cache_dir() -> Path:
    """``$SEGKIT_CACHE_DIR`` or ``~/.cache/segkit``: fingerprints are keyed by content, so any folder will do."""
    return Path(os.environ.get("SEGKIT_CACHE_DIR") or Path.home() / ".cache" / "segkit") / "fingerprints"


def content_key(pairs: Sequence[tuple[Path, Path]], scaling: IntensityNormalization | None = None) -> str:
    """A hash of every image's and mask's bytes (and their order), and of the ``scaling`` the statistics are
    read through: the same data gets the same key wherever it lives, and a changed file a new one."""
    digest = hashlib.sha256(f"segkit-fingerprint-{VERSION}".encode())
    if scaling is not None:
        digest.update(json.dumps(scaling.to_dict(), sort_keys=True).encode())
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


def _value_counts(values: np.ndarray) -> dict[int, int]:
    """Pixels of each stored value: a bincount for 8-bit masks (10x quicker than a sort), else ``np.unique``."""
    if values.dtype == np.uint8:
        counts = np.bincount(values.ravel(), minlength=256)
        present = np.flatnonzero(counts)
        return dict(zip(present.tolist(), counts[present].tolist(), strict=True))
    stored, counts = np.unique(values, return_counts=True)
    return dict(zip(stored.tolist(), counts.tolist(), strict=True))


def _component_sizes(mask: np.ndarray, value: int, rng: np.random.Generator) -> tuple[list[int], list[int]]:
    """Areas and bounding-box long sides of the connected components (8-connected) of ``mask == value``.

    OpenCV's labelling returns both with the labels, in half the time of scipy's ``label`` + ``find_objects``.
    """
    count, _, stats, _ = cv2.connectedComponentsWithStats((mask == value).view(np.uint8), connectivity=8)
    stats = stats[1:]  # label 0 is the background
    count -= 1
    if count == 0:
        return [], []
    areas = stats[:, cv2.CC_STAT_AREA]
    sides = np.maximum(stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT])
    if count > MAX_COMPONENTS:
        keep = rng.choice(count, MAX_COMPONENTS, replace=False)
        areas, sides = areas[keep], sides[keep]
    return areas.tolist(), sides.tolist()


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
    return {half: _value_counts(part) for half, part in parts.items()}


def _sample(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fixed-size random sample of an ``(H, W, C)`` image's pixels, channels first: ``(C, n)``, so that the
    statistics over millions of samples run along contiguous rows (3x quicker than down columns)."""
    flat = image.reshape(-1, image.shape[-1])
    return flat[rng.choice(flat.shape[0], min(PIXELS_PER_IMAGE, flat.shape[0]), replace=False)].T


def _read_pair(index: int, image_path: Path, mask_path: Path, read_mode: str, high_bit: bool, seed: int,
               scaling: IntensityNormalization | None) -> dict:  # fmt: skip
    """One pair's part of the fingerprint. Each pair draws from its own generator (seeded by the pair's index),
    so the result does not depend on which thread read which pair."""
    rng = np.random.default_rng([seed, index])
    # What the network sees: 0..1, through the typed scaling, else high-bit images through their percentiles
    image = read_image(image_path, read_mode, scaling or (_PERCENTILES if high_bit else None))
    scale = 255.0 if image.dtype == np.uint8 else 1.0
    part = {
        "size": image.shape[:2],
        "grey": read_mode == "gray" or _equal_channels(image),
        "sample": _sample(image, rng).astype(np.float32) / scale,
        "raw": None,
    }
    if high_bit:
        part["raw"] = _sample(np.asarray(read_image(image_path, read_mode, _stored_values), np.float64), rng)
    mask = read_mask(mask_path)
    halves = _half_counts(mask)
    part["values"] = {
        value: {
            "pixels": count,
            "halves": {half: halves[half].get(value, 0) for half in HALVES},
            "sizes": _component_sizes(mask, value, rng),
        }
        for value, count in _value_counts(mask).items()
    }
    return part


def _workers(count: int) -> int:
    """Threads to read pairs with: decoding and labelling release the GIL, so one per core helps."""
    return max(1, min(count, os.cpu_count() or 1, 8))


def compute_fingerprint(
    pairs: Sequence[tuple[Path, Path]], seed: int = 0, scaling: IntensityNormalization | None = None
) -> dict:
    """Read every pair once and summarise it (see the module docstring for what and why).

    ``scaling``: the intensity scaling the run reads images through, when one is typed
    (``data.train_dataset.intensity``); the intensity statistics are those of the scaled pixels, so the
    z-score planned from them matches what the network is fed."""
    heights, widths, channels, dtypes = [], [], [], set()
    for image_path, _ in pairs:  # headers only
        c, dtype = header(image_path)
        channels.append(c)
        dtypes.add(dtype)
    high_bit = any(d != "uint8" for d in dtypes)
    # Each image is decoded once, as RGB when any is stored with colour channels; the colour mode is decided
    # at the end (grey when every image's channels are equal) and the samples cut down to one channel then.
    read_mode = "rgb" if max(channels) >= 3 else "gray"
    read = partial(_read_pair, read_mode=read_mode, high_bit=high_bit, seed=seed, scaling=scaling)
    with ThreadPoolExecutor(_workers(len(pairs))) as pool:
        parts = list(pool.map(read, range(len(pairs)), *zip(*pairs, strict=True)))

    values: dict[int, dict] = {}
    for index, part in enumerate(parts):
        heights.append(part["size"][0])
        widths.append(part["size"][1])
        for value, found in part["values"].items():
            entry = values.setdefault(value, {"pixels": 0, "images": [], "areas": [], "sides": [],
                                              "halves": dict.fromkeys(HALVES, 0)})  # fmt: skip
            entry["pixels"] += found["pixels"]
            for half in HALVES:
                entry["halves"][half] += found["halves"][half]
            entry["images"].append(index)
            entry["areas"] += found["sizes"][0]
            entry["sides"] += found["sizes"][1]

    grey = all(part["grey"] for part in parts)
    color_mode = "gray" if grey else "rgb"
    channels_kept = slice(0, 1) if grey else slice(None)
    pixels = np.concatenate([part["sample"][channels_kept] for part in parts], axis=1)
    total = sum(v["pixels"] for v in values.values())
    low, mid, high = np.percentile(pixels, [0.5, 50, 99.5], axis=1).round(5).tolist()
    intensity = {
        "mean": pixels.mean(1).round(5).tolist(),
        "std": pixels.std(1).round(5).tolist(),
        "p0_5": low,
        "p50": mid,
        "p99_5": high,
    }
    if not grey:  # what a typed color_mode=gray would feed the network instead
        luma = LUMA @ pixels
        intensity["grey_mean"], intensity["grey_std"] = round(float(luma.mean()), 5), round(float(luma.std()), 5)
    if high_bit:
        raw = np.concatenate([part["raw"][channels_kept] for part in parts], axis=1)
        raw_low, raw_high = np.percentile(raw, [0.5, 99.5], axis=1).round(3).tolist()
        intensity["raw_p0_5"], intensity["raw_p99_5"] = raw_low, raw_high
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
        "scaling": None if scaling is None else scaling.to_dict(),
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


def fingerprint(
    pairs: Sequence[tuple[Path, Path]],
    cache_dir: Path | None = None,
    scaling: IntensityNormalization | None = None,
) -> dict:
    """The fingerprint of ``pairs`` (image, mask paths), from the cache when the same content was seen before
    through the same ``scaling`` (a typed intensity; :func:`compute_fingerprint`).

    The result also names its ``key`` and the seconds it took (``seconds``, 0 when cached).
    """
    if not pairs:
        raise ValueError("cannot fingerprint an empty training split")
    key = content_key(pairs, scaling)
    cache = (cache_dir or default_cache_dir()) / f"{key}.json"
    if cache.is_file():
        found = json.loads(cache.read_text())
        if found.get("version") == VERSION:
            log.info("Fingerprint %s from the cache (%s)", key, cache)
            return {**found, "seconds": 0.0}
    start = time.perf_counter()
    result = {"key": key, **compute_fingerprint(pairs, scaling=scaling)}
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
