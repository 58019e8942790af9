"""The data settings that shape a training step fail at construction, naming the setting and the value."""

from __future__ import annotations

import pytest

from segkit.data import SegmentationDataModule


@pytest.mark.parametrize(
    "setting, message",
    [
        ({"batch_size": 0}, r"data.batch_size must be a positive whole number of crops, got 0"),
        ({"batch_size": True}, r"data.batch_size must be .* got True"),
        ({"patch_size": [64, 0]}, r"data.patch_size must be \[height, width\] .* got \[64, 0\]"),
        ({"patch_size": [64, 64], "patch_scale": "big"}, r"data.patch_scale must be \[low, high\] .* got 'big'"),
        ({"patch_size": [64, 64], "patch_scale": [0, 1]}, r"0 < low <= high, got \[0, 1\]"),
        ({"patch_size": [64, 64], "patch_scale": "12"}, r"0 < low <= high, got '12'"),
        ({"patch_size": [64, 64], "patch_scale": [0.5, 1, 2]}, r"0 < low <= high, got \[0.5, 1, 2\]"),
        ({"patch_size": [64, 64], "foreground_crops": -0.1}, r"data.foreground_crops must be a share in \[0, 1\]"),
        ({"patch_scale": [0.5, 1.5]}, "data.patch_scale zooms images before their patch_size crop"),
        ({"foreground_crops": 0.33}, "data.foreground_crops places training crops: set data.patch_size too"),
    ],
)
def test_bad_step_settings_are_named(setting: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SegmentationDataModule(lambda transform: [], num_classes=2, **setting)


def test_good_step_settings_are_kept() -> None:
    dm = SegmentationDataModule(lambda transform: [], 2, batch_size=3, patch_size=[32, 48], patch_scale=[0.5, 2])
    assert dm.batch_size == 3 and dm.patch_size == (32, 48)
    assert [type(t).__name__ for t in dm.train_transform.transforms[:3]] == ["RandomScale", "PadIfNeeded", "RandomCrop"]
