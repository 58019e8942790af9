"""The U-Net paper's border weight map: values by hand, the windowed distances against full transforms, the
disk cache, the map following the mask through augmentations, and the weighted loss."""

from __future__ import annotations

import math
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from scipy import ndimage

from segkit.data import FolderDataset
from segkit.data.datamodule import with_tail
from segkit.data.weight_map import WeightMaps, balanced_class_weights, border_weights, unet_weight_map
from segkit.losses import WeightMapCrossEntropyLoss


def full_border_weights(cells: np.ndarray, w0: float, sigma: float) -> np.ndarray:
    """The formula with one whole-image distance transform per cell: slow, obviously right."""
    labels, count = ndimage.label(cells)
    if count < 2:
        return np.zeros(cells.shape)
    distances = np.sort(np.stack([ndimage.distance_transform_edt(labels != i) for i in range(1, count + 1)]), axis=0)
    return w0 * np.exp(-((distances[0] + distances[1]) ** 2) / (2 * sigma**2))


def test_class_balance_by_hand() -> None:
    mask = np.array([[0, 0, 0, 1], [0, 0, 0, 255]])  # 6 of class 0, 1 of class 1, 1 ignored: 7 valid
    weights = balanced_class_weights(mask)
    assert weights[0, 0] == pytest.approx(7 / (2 * 6))
    assert weights[0, 3] == pytest.approx(7 / (2 * 1))
    assert weights[1, 3] == 0


def test_border_between_two_cells_by_hand() -> None:
    cells = np.ones((5, 7), dtype=bool)
    cells[:, 3] = False  # a one-pixel membrane between two cells
    weights = border_weights(cells, w0=10, sigma=5)
    assert weights[2, 3] == pytest.approx(10 * math.exp(-((1 + 1) ** 2) / 50))  # membrane: 1 px from each cell
    assert weights[2, 2] == pytest.approx(10 * math.exp(-((0 + 2) ** 2) / 50))  # in a cell, 2 px from the other
    assert weights[2, 0] == pytest.approx(10 * math.exp(-((0 + 4) ** 2) / 50))
    assert border_weights(np.ones((5, 7), dtype=bool)).max() == 0  # one cell: no border


def test_windowed_distances_equal_full_transforms() -> None:
    rng = np.random.default_rng(0)
    cells = ndimage.binary_opening(rng.random((96, 80)) > 0.35)  # many irregular cells, some far apart
    fast = border_weights(cells, w0=10, sigma=5)
    assert ndimage.label(cells)[1] > 20
    np.testing.assert_allclose(fast, full_border_weights(cells, 10, 5), atol=1e-5)


def test_weight_map_zero_on_ignored_pixels_and_cached(tmp_path: Path) -> None:
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[:, 8] = 1
    mask[0] = 255
    maps = WeightMaps(cell_class=0, w0=10, sigma=5, cache_dir=tmp_path)
    first = maps(mask)
    np.testing.assert_array_equal(first, unet_weight_map(mask, 0, 10, 5))
    assert (first[0] == 0).all() and first[5, 8] > first[5, 0] > 0
    [cached] = list(tmp_path.glob("*.npy"))
    np.save(cached, np.full((16, 16), 7.0, dtype=np.float32))  # the cache is read, not recomputed
    assert (maps(mask) == 7).all()
    assert not (WeightMaps(0, 10, 3, tmp_path)(mask) == 7).all()  # another sigma: another file
    with pytest.raises(ValueError, match="sigma > 0"):
        WeightMaps(0, sigma=0)


def test_weight_map_follows_the_mask_through_augmentations(tmp_path: Path) -> None:
    root = tmp_path / "em"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    mask = np.full((40, 48), 255, dtype=np.uint8)  # interior (255 stored) with a membrane grid (0)
    mask[:, ::12] = 0
    mask[::10, :] = 0
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48), dtype=np.uint8)).save(root / "images/a.png")
    Image.fromarray(mask).save(root / "masks/a.png")
    spec = {"cell_class": 0, "cache_dir": tmp_path / "cache"}
    flip = with_tail(A.Compose([A.HorizontalFlip(p=1.0), A.RandomRotate90(p=1.0)]), [0.5], [0.25], seed=0)
    plain = FolderDataset(root, 2, mask_mapping={0: 1, 255: 0}, color_mode="gray", weight_map=spec)
    moved = FolderDataset(root, 2, mask_mapping={0: 1, 255: 0}, color_mode="gray", weight_map=spec, transform=flip)
    sample = moved[0]
    weight = torch.as_tensor(plain[0]["weight"])
    # whatever rotation was drawn, the map landed where the mask did: same pixels, same values
    candidates = [torch.rot90(weight.flip(-1), k, (0, 1)) for k in range(4)]
    masks = [torch.rot90(torch.as_tensor(plain[0]["mask"]).flip(-1), k, (0, 1)) for k in range(4)]
    hit = [k for k in range(4) if masks[k].shape == sample["mask"].shape and torch.equal(masks[k], sample["mask"])]
    assert hit and torch.equal(candidates[hit[0]], sample["weight"])
    assert sample["weight"].dtype == torch.float32 and sample["weight"].max() > 5  # borders weigh most


def test_weight_map_cross_entropy_by_hand() -> None:
    logits = torch.tensor([[[[2.0, 0.0, 1.0]], [[0.0, 1.0, 1.0]]]])  # (1, 2, 1, 3)
    target = torch.tensor([[[0, 1, 255]]])
    weight = torch.tensor([[[1.0, 3.0, 9.0]]])
    ce = F.cross_entropy(logits, torch.tensor([[[0, 1, 0]]]), reduction="none")[0, 0]
    expected = (1 * ce[0] + 3 * ce[1]) / 4  # the ignored pixel's weight does not count
    assert WeightMapCrossEntropyLoss()(logits, target, weight=weight).item() == pytest.approx(expected.item())
    plain = F.cross_entropy(logits, target, ignore_index=255)
    assert WeightMapCrossEntropyLoss()(logits, target).item() == pytest.approx(plain.item())
