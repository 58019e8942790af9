"""Foreground oversampling (nnU-Net's ``oversample_foreground_percent``): crops that find sparse objects."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
from PIL import Image

from segkit.data import FolderDataset, SegmentationDataModule
from segkit.data.crops import ForegroundCrop


def crops(mask: np.ndarray, foreground: float, n: int = 400, size: int = 32, seed: int = 0) -> list[np.ndarray]:
    """``n`` crops of ``mask`` (its pixel coordinates ride along in the image, to check where each crop came from)."""
    rows, cols = np.indices(mask.shape)
    image = np.stack([rows, cols, np.zeros_like(rows)], axis=-1).astype(np.float32)
    pipeline = A.Compose([ForegroundCrop(size, size, foreground)], seed=seed)
    out = []
    for _ in range(n):
        sample = pipeline(image=image, mask=mask)
        top, left = int(sample["image"][0, 0, 0]), int(sample["image"][0, 0, 1])
        assert sample["mask"].shape == (size, size)
        np.testing.assert_array_equal(sample["mask"], mask[top : top + size, left : left + size])  # same window
        out.append(sample["mask"])
    return out


def one_small_object() -> np.ndarray:
    mask = np.zeros((200, 240), dtype=np.uint8)
    mask[150:153, 30:33] = 1  # 9 of 48,000 pixels
    return mask


def test_every_crop_finds_the_object_at_share_one_and_few_do_at_zero() -> None:
    mask = one_small_object()
    with_object = [int((m == 1).any()) for m in crops(mask, 1.0)]
    assert sum(with_object) == len(with_object)
    uniform = np.mean([(m == 1).any() for m in crops(mask, 0.0)])
    assert uniform < 0.1  # ~ (32 + 2)^2 / (169 * 209) = 3 %
    third = np.mean([(m == 1).any() for m in crops(mask, 0.33)])
    assert 0.25 < third < 0.45  # the forced third, and the few uniform crops that find it too


def test_the_object_lands_anywhere_in_the_crop_not_always_the_centre() -> None:
    offsets = set()
    for m in crops(one_small_object(), 1.0, n=100):
        ys, xs = np.nonzero(m == 1)
        offsets.add((int(ys.min()) // 8, int(xs.min()) // 8))
    assert len(offsets) > 8  # the object's position in the crop varies over the 4x4 grid of 8-px cells


def test_a_rare_class_is_found_as_often_as_a_common_one() -> None:
    mask = np.zeros((200, 240), dtype=np.uint8)
    mask[:, 120:] = 1  # half the image
    mask[20:22, 20:22] = 2  # 4 pixels
    found = np.mean([(m == 2).any() for m in crops(mask, 1.0)])
    assert 0.4 < found < 0.6  # a class picked uniformly, then one of its pixels


def test_background_and_ignored_pixels_are_never_the_target() -> None:
    mask = np.zeros((200, 240), dtype=np.uint8)
    mask[150:153, 30:33] = 255  # ignored (padding, unlabelled): not an object
    hits = np.mean([(m == 255).any() for m in crops(mask, 1.0)])
    assert hits < 0.1  # no foreground, so uniform crops, as at share 0


def test_crops_repeat_for_a_seed() -> None:
    mask = one_small_object()
    first = [m.sum() for m in crops(mask, 0.5, n=50, seed=3)]
    assert first == [m.sum() for m in crops(mask, 0.5, n=50, seed=3)]


def test_bad_shares_and_missing_masks_are_named() -> None:
    with pytest.raises(ValueError, match=r"share in \[0, 1\]"):
        ForegroundCrop(32, 32, 1.5)
    with pytest.raises(ValueError, match="placed by the mask"):
        A.Compose([ForegroundCrop(8, 8, 0.5)])(image=np.zeros((16, 16, 3), np.float32))


def test_the_datamodule_option_feeds_training_crops(tmp_path: Path) -> None:
    root = tmp_path / "sparse" / "train"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.full((160, 200, 3), 40, np.uint8)).save(root / "images" / f"a{i}.png")
        mask = np.zeros((160, 200), np.uint8)
        mask[100:104, 150:154] = 255
        Image.fromarray(mask).save(root / "masks" / f"a{i}.png")

    def module(share, patch=(32, 32)):
        def factory(transform):
            return FolderDataset(root, 2, mask_mapping={0: 0, 255: 1}, transform=transform)

        dm = SegmentationDataModule(factory, 2, val_dataset=factory, patch_size=patch, foreground_crops=share, seed=0)
        dm.setup("fit")
        return dm

    dm = module(1.0)
    assert all(dm.train_set[i % 2]["mask"].eq(1).any() for i in range(20))
    assert dm.val_set[0]["mask"].shape == (160, 200)  # validation still sees whole images
    with pytest.raises(ValueError, match="set data.patch_size too"):
        module(0.33, patch=None)
