"""NormalizeAnyDepth: one normalisation for 8-bit, 16-bit and float images, shared by training and prediction."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import numpy as np


class NormalizeAnyDepth(A.ImageOnlyTransform):
    """``(x / scale - mean) / std`` with scale 255 for uint8 images and 1 for float images (already in [0, 1]).

    8-bit images take albumentations' own Normalize path unchanged; 16-bit and float images arrive as float32
    in [0, 1] from :mod:`segkit.data.intensity`, for which ``max_pixel_value`` must be 1.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__(p=1.0)
        self.mean, self.std = tuple(mean), tuple(std)
        self.uint8 = A.Normalize(mean=self.mean, std=self.std, max_pixel_value=255.0, p=1.0)
        self.unit = A.Normalize(mean=self.mean, std=self.std, max_pixel_value=1.0, p=1.0)

    def apply(self, img: np.ndarray, **params: object) -> np.ndarray:
        """Normalise one image."""
        return (self.uint8 if img.dtype == np.uint8 else self.unit).apply(img, **params)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("mean", "std")
