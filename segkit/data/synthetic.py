"""SyntheticShapes: a procedural multi-class segmentation set that needs no files.

Each sample is drawn from its own seed, so ``dataset[i]`` is the same on every machine and every epoch.
Classes are told apart by shape and surface texture, never by colour: every shape and the background get
random colours, discs are plain, squares carry a checkerboard and triangles a dot grid (each with a random
phase and contrast), the background carries random stripes and the whole image gets Gaussian noise.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

CLASS_NAMES = ("background", "disc", "square", "triangle")


def _disc(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def _square(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    return (np.abs(yy - cy) <= r * 0.85) & (np.abs(xx - cx) <= r * 0.85)


def _triangle(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    # Upward isosceles triangle inscribed in the circle of radius r.
    top, bottom = cy - r, cy + r * 0.6
    half_width = (yy - top) / (bottom - top) * r
    return (yy >= top) & (yy <= bottom) & (np.abs(xx - cx) <= half_width)


SHAPES = (_disc, _square, _triangle)


def _texture(label: int, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Class-specific 0..1 surface pattern: plain discs, checkerboard squares, dotted triangles."""
    oy, ox = rng.uniform(0, 8, size=2)
    if label == 2:
        return ((((yy + oy) // 3) + ((xx + ox) // 3)) % 2).astype(np.float32)
    if label == 3:
        return ((((yy + oy) % 5) < 2) & (((xx + ox) % 5) < 2)).astype(np.float32)
    return np.zeros_like(yy)


class SyntheticShapes(Dataset):
    """Deterministic images of discs, squares and triangles on textured, noisy backgrounds.

    Returns ``{"image": ..., "mask": ...}``: with a transform, whatever it makes of the uint8 ``(H, W, 3)``
    image and the ``(H, W)`` mask (the datamodule's tail gives float ``(3, H, W)`` / int64 ``(H, W)``);
    without one, the raw uint8 image and an int64 mask tensor.

    Args:
        num_samples: length of the dataset.
        image_size: ``(H, W)`` of every image.
        seed: base seed; sample ``i`` is drawn from ``seed * 1_000_003 + i``.
        max_shapes: each image holds 1..max_shapes shapes (later shapes occlude earlier ones).
        radius: range of shape radii, as fractions of the shorter image side.
        noise: standard deviation of the additive Gaussian noise, in grey levels.
        transform: an albumentations-style callable ``transform(image=..., mask=...) -> dict``.
        cache: keep rendered samples in memory (64x64 costs 16 KB a sample) so later epochs skip drawing.
    """

    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES

    def __init__(
        self,
        num_samples: int = 256,
        image_size: tuple[int, int] = (64, 64),
        seed: int = 0,
        max_shapes: int = 3,
        radius: tuple[float, float] = (0.12, 0.25),
        noise: float = 12.0,
        transform: Callable[..., dict] | None = None,
        cache: bool = True,
    ) -> None:
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self.num_samples = num_samples
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.seed = seed
        self.max_shapes = max_shapes
        self.radius = (float(radius[0]), float(radius[1]))
        self.noise = noise
        self.transform = transform
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = {} if cache else None

    def __len__(self) -> int:
        return self.num_samples

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw sample ``index``: a uint8 ``(H, W, 3)`` image and a uint8 ``(H, W)`` mask."""
        rng = np.random.default_rng(self.seed * 1_000_003 + index)
        h, w = self.image_size
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)

        # Background: two random colours mixed by a random-orientation stripe pattern.
        angle, period = rng.uniform(0, np.pi), rng.uniform(4, 16)
        stripes = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
        c0, c1 = rng.uniform(0, 255, size=(2, 3))
        image = c0 + stripes[..., None] * (c1 - c0)
        mask = np.zeros((h, w), dtype=np.uint8)

        size = min(h, w)
        for _ in range(rng.integers(1, self.max_shapes + 1)):
            label = int(rng.integers(1, self.num_classes))
            r = rng.uniform(*self.radius) * size
            cy, cx = rng.uniform(r, h - r), rng.uniform(r, w - r)
            region = SHAPES[label - 1](yy, xx, cy, cx, r)
            base, accent = rng.uniform(0, 255, size=(2, 3))
            contrast = rng.uniform(0.3, 0.7)
            fill = base + contrast * _texture(label, yy, xx, rng)[..., None] * (accent - base)
            image[region] = fill[region]
            mask[region] = label

        image = image + rng.normal(0, self.noise, size=image.shape)
        return np.clip(image, 0, 255).astype(np.uint8), mask

    def sample(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The raw uint8 image and mask of sample ``index``, from the cache when it is on."""
        if not 0 <= index < self.num_samples:
            raise IndexError(f"index {index} out of range for {self.num_samples} samples")
        if self._cache is None:
            return self.render(index)
        if index not in self._cache:
            self._cache[index] = self.render(index)
        return self._cache[index]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, mask = self.sample(index)
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        return {"image": torch.as_tensor(image), "mask": torch.as_tensor(mask).long()}


class SyntheticShapeClasses(Dataset):
    """Image classification twin of :class:`SyntheticShapes`: one shape per image, the label is its kind.

    Classes: ``disc``, ``square``, ``triangle``. Deterministic by seed, textured and noisy like the
    segmentation set. Returns ``{"image": ..., "label": int64 scalar}``. Shapes are larger than in the
    segmentation set by default (radius 0.3-0.45 of the image side): with one label per image and small
    shapes on loud striped backgrounds, a ResNet-18 from scratch memorises 2048 training images and stays at
    chance on new ones.
    """

    num_classes = len(CLASS_NAMES) - 1
    class_names = CLASS_NAMES[1:]

    def __init__(
        self,
        num_samples: int = 256,
        image_size: tuple[int, int] = (64, 64),
        seed: int = 0,
        radius: tuple[float, float] = (0.3, 0.45),
        transform: Callable[..., dict] | None = None,
    ) -> None:
        self.shapes = SyntheticShapes(num_samples, image_size, seed, max_shapes=1, radius=radius)
        self.transform = transform

    @property
    def labels(self) -> list[int]:
        """The label of every sample, in order."""
        return [self._sample(i)[1] for i in range(len(self))]

    def __len__(self) -> int:
        return len(self.shapes)

    def _sample(self, index: int) -> tuple[np.ndarray, int]:
        image, mask = self.shapes.sample(index)
        return image, int(mask.max()) - 1  # the one shape's class; masks hold 0 and that class

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, label = self._sample(index)
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return {"image": torch.as_tensor(image), "label": torch.tensor(label)}


def write_folder(root: str | Path, train: int = 64, val: int = 8, size: int = 64) -> Path:
    """Write SyntheticShapes as the ``data=folder`` layout, ``<root>/{train,val}/{images,masks}/NNNN.png``
    (RGB images, masks of class indices 0..3): something to predict on after the quickstart, and a folder
    dataset to try ``data=folder`` on. Train and val use the quickstart's seeds (0 and 1)."""
    from PIL import Image

    root = Path(root)
    for split, count, seed in (("train", train, 0), ("val", val, 1)):
        if not count:
            continue
        shapes = SyntheticShapes(count, (size, size), seed=seed, cache=False)
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image, mask = shapes.sample(i)
            Image.fromarray(image).save(root / split / "images" / f"{i:04d}.png")
            Image.fromarray(mask.astype(np.uint8)).save(root / split / "masks" / f"{i:04d}.png")
    return root


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m segkit.data.synthetic",
        description="Write the synthetic shapes as <root>/{train,val}/{images,masks}/ (the data=folder layout).",
    )
    parser.add_argument("root", help="output folder")
    parser.add_argument("--train", type=int, default=64, help="training pairs (0: none)")
    parser.add_argument("--val", type=int, default=8, help="validation pairs (0: none)")
    parser.add_argument("--size", type=int, default=64, help="image height and width in pixels")
    args = parser.parse_args()
    out = write_folder(args.root, args.train, args.val, args.size)
    print(f"wrote {args.train} training and {args.val} validation pairs of {args.size}x{args.size} to {out}")
