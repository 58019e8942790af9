"""The normalisation shared by training and prediction: a dataset's mean/std, or each image's own (z-score).

``dataset`` (the default) subtracts one per-channel mean and divides by one standard deviation for every
image: the training split's statistics, or what pretrained weights expect. ``image`` z-scores each image by
its own per-channel mean and standard deviation, nnU-Net's scheme for non-CT images: gain and offset that
change from image to image (exposure, stain strength) are gone before the network sees them.

Per-image statistics are those of the whole image, read before the training crop is taken
(:class:`ImageStatistics` at the head of the pipeline), so a 112² crop of a large image is normalised as the
whole image is at prediction time, and brightness/contrast augmentation after the crop is not undone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np

PER_IMAGE = "image"  # data.normalization: each image z-scored by its own statistics
MODES = ("dataset", PER_IMAGE)
STATS_KEY = "image_stats"  # the pipeline's data key that carries the whole image's (mean, std)
MIN_STD = 1e-3  # of the 0..1 image: a flat image is centred, not blown up
STATS_PIXELS = 32_768  # statistics from every k-th pixel beyond this: under 0.5 ms for any image size
DISPLAY_MEAN, DISPLAY_STD = (0.5,), (0.2,)  # a z-scored image shown in 0..1: ±2.5 standard deviations


def checked_mode(mode: str) -> str:
    """``mode`` if it is one of :data:`MODES`, else a clear error."""
    if mode not in MODES:
        raise ValueError(f"data.normalization must be one of {MODES}, got {mode!r}")
    return mode


def channel_stats(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of an ``(H, W[, C])`` image, in 0..1 units (uint8 / 255), from
    at most about :data:`STATS_PIXELS` evenly spaced pixels (the same ones in training and prediction)."""
    pixels = image.reshape(-1, image.shape[2] if image.ndim == 3 else 1)
    x = np.ascontiguousarray(pixels[:: max(1, len(pixels) // STATS_PIXELS)].T).astype(np.float32)  # (C, N)
    if image.dtype == np.uint8:
        x /= 255.0
    return x.mean(axis=1), np.maximum(x.std(axis=1), MIN_STD)


class ImageStatistics(A.ImageOnlyTransform):
    """Records the whole image's per-channel mean and std under :data:`STATS_KEY`, for
    :class:`NormalizeAnyDepth` at the tail to use after crops; the image itself passes unchanged."""

    def __init__(self) -> None:
        super().__init__(p=1.0)

    def __call__(self, *args: Any, force_apply: bool = False, **data: Any) -> dict[str, Any]:
        return {**data, STATS_KEY: channel_stats(data["image"])}

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return img

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ()


class NormalizeAnyDepth(A.ImageOnlyTransform):
    """``(x / scale - mean) / std`` with scale 255 for uint8 images and 1 for float images (already in [0, 1]).

    8-bit images take albumentations' own Normalize path unchanged; 16-bit and float images arrive as float32
    in [0, 1] from :mod:`segkit.data.intensity`, for which ``max_pixel_value`` must be 1. With
    ``per_image=True``, ``mean`` and ``std`` are not used: each image is z-scored by the statistics
    :class:`ImageStatistics` recorded, or by its own when nothing was recorded (prediction's whole images).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], per_image: bool = False) -> None:
        super().__init__(p=1.0)
        self.mean, self.std, self.per_image = tuple(mean), tuple(std), per_image
        self.uint8 = A.Normalize(mean=self.mean, std=self.std, max_pixel_value=255.0, p=1.0)
        self.unit = A.Normalize(mean=self.mean, std=self.std, max_pixel_value=1.0, p=1.0)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        return {"stats": data.get(STATS_KEY)}

    def apply(self, img: np.ndarray, stats: tuple[np.ndarray, np.ndarray] | None = None, **params: Any) -> np.ndarray:
        """Normalise one image."""
        if not self.per_image:
            return (self.uint8 if img.dtype == np.uint8 else self.unit).apply(img, **params)
        mean, std = stats if stats is not None else channel_stats(img)
        x = img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 1.0)
        return ((x - mean) / std).astype(np.float32, copy=False)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("mean", "std", "per_image")
