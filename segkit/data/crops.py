"""Training crops that find the foreground: nnU-Net's foreground oversampling as an albumentations transform.

A random crop of a large image often holds no object at all: a 112² crop of a 1040x1388 microscopy image
with a few dozen nuclei, or any crop of a folder whose objects cover 1 % of the pixels. nnU-Net therefore
forces a third of each batch's patches to contain foreground (``oversample_foreground_percent``). Here each
crop does so with probability ``foreground``: it picks one of the foreground classes present in the mask
(uniformly, so a rare class is found as often as a common one), one of that class's pixels at random, and
places the crop at a random offset that keeps the pixel inside. Other crops are uniform, as ``RandomCrop``.
albumentations' ``CropNonEmptyMaskIfExists`` is close but not this: it crops on any non-zero pixel every
time (padding's ignore value included unless listed), with no share, and picks pixels, not classes, so a
common class crowds out a rare one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from albumentations.augmentations.crops.transforms import BaseCrop


class ForegroundCrop(BaseCrop):
    """A ``height x width`` crop of an image at least that large that holds foreground with probability
    ``foreground`` (when the mask has any): a class other than 0 (background), never ``ignore_index``.

    Args:
        height, width: the crop's size; the image must be at least that large (pad it first).
        foreground: the share of crops centred near a foreground pixel, in ``[0, 1]`` (nnU-Net: 0.33).
        ignore_index: the mask value that is not a class (padding, unlabelled pixels).
    """

    def __init__(self, height: int, width: int, foreground: float, ignore_index: int = 255, p: float = 1.0) -> None:
        super().__init__(p=p)
        if not 0.0 <= foreground <= 1.0:
            raise ValueError(f"foreground crops must be a share in [0, 1], got {foreground}")
        self.height, self.width = int(height), int(width)
        self.foreground = float(foreground)
        self.ignore_index = int(ignore_index)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        mask = data.get("mask")
        if mask is None:
            raise ValueError("foreground crops are placed by the mask: this pipeline has none (classification?)")
        rows, cols = mask.shape[:2]
        if rows < self.height or cols < self.width:
            raise ValueError(f"a {self.height}x{self.width} crop does not fit a {rows}x{cols} image; pad it first")
        pixel = self._foreground_pixel(mask) if self.py_random.random() < self.foreground else None
        if pixel is None:
            top = self.py_random.randint(0, rows - self.height)
            left = self.py_random.randint(0, cols - self.width)
        else:
            y, x = pixel
            top = min(max(y - self.py_random.randint(0, self.height - 1), 0), rows - self.height)
            left = min(max(x - self.py_random.randint(0, self.width - 1), 0), cols - self.width)
        return {"crop_coords": (left, top, left + self.width, top + self.height)}

    def _foreground_pixel(self, mask: np.ndarray) -> tuple[int, int] | None:
        """A random pixel of a random foreground class present in ``mask``; ``None`` when there is none."""
        counts = np.bincount(mask.ravel(), minlength=256)
        counts[[0, self.ignore_index]] = 0
        present = np.flatnonzero(counts)
        if not len(present):
            return None
        cls = present[self.py_random.randrange(len(present))]
        where = np.flatnonzero(mask.ravel() == cls)
        index = int(where[self.py_random.randrange(len(where))])
        return divmod(index, mask.shape[1])

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "foreground", "ignore_index")
