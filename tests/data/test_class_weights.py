"""Median-frequency class weights from the training masks, by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import Subset

from segkit.data import FolderDataset
from segkit.data.class_weights import class_pixel_counts, median_frequency_weights


def write(root: Path, masks: list[np.ndarray]) -> FolderDataset:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for i, mask in enumerate(masks):
        Image.fromarray(np.zeros((*mask.shape, 3), np.uint8)).save(root / "images" / f"{i}.png")
        Image.fromarray(mask.astype(np.uint8)).save(root / "masks" / f"{i}.png")
    return FolderDataset(root, num_classes=3, mask_mapping={0: 0, 1: 1, 2: 2, 9: 255})


def test_median_frequency_by_hand(tmp_path: Path) -> None:
    a = np.zeros((2, 5), np.uint8)  # 10 pixels: 8 of class 0, 2 of class 1
    a[0, :2] = 1
    b = np.zeros((2, 5), np.uint8)  # 10 pixels: 5 of class 0, 4 of class 2, 1 ignored (void value 9)
    b[1, :4], b[1, 4] = 2, 9
    dataset = write(tmp_path / "d", [a, b])
    pixels, image_pixels = class_pixel_counts(dataset, 3)
    assert pixels.tolist() == [13, 2, 4]
    assert image_pixels.tolist() == [19, 10, 9]  # class 0 is in both images (10 + 9 labelled pixels)
    freq = np.array([13 / 19, 2 / 10, 4 / 9])
    expected = np.median(freq) / freq
    assert median_frequency_weights(dataset, 3) == pytest.approx(expected.tolist())
    assert median_frequency_weights(dataset, 3, power=0.5) == pytest.approx(np.sqrt(expected).tolist())
    only_first = median_frequency_weights(Subset(dataset, [0]), 3)  # a hold-out split counts its own images
    assert only_first[2] == 0.0 and only_first[0] == pytest.approx(np.median([0.8, 0.2]) / 0.8)
