"""Data a new user has: images of different sizes (RGBA, 0/255 masks) and 16-bit / float images."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from segkit.data import FolderDataset, SegmentationDataModule
from segkit.data.datamodule import collate, with_tail
from segkit.data.intensity import IntensityNormalization
from segkit.data.io import read_image
from segkit.train import train

SIZES = [(40, 56), (64, 64), (100, 72), (30, 30)]  # (H, W): one smaller than the 48x48 patch


def write_rgba_folder(root: Path, sizes=SIZES) -> Path:
    rng = np.random.default_rng(0)
    for split, chosen in (("train", sizes), ("val", sizes[:2] + sizes[3:])):
        (root / split / "images").mkdir(parents=True)
        (root / split / "masks").mkdir(parents=True)
        for i, (h, w) in enumerate(chosen):
            rgba = rng.integers(0, 256, (h, w, 4), dtype=np.uint8)
            mask = np.zeros((h, w), dtype=np.uint8)
            mask[h // 4 : h // 2, w // 4 : w // 2] = 255
            rgba[..., 0][mask > 0] = 255  # the foreground is visible in the red channel
            Image.fromarray(rgba, "RGBA").save(root / split / "images" / f"cell{i}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"cell{i}.png")
    return root


def test_folder_of_variable_size_rgba_images_trains_out_of_the_box(compose_cfg, tmp_path: Path) -> None:
    data = write_rgba_folder(tmp_path / "cells")
    metrics = train(compose_cfg(
        "data=folder", f"paths.data_dir={data}", "data.train_dataset.mask_mapping={0: 0, 255: 1}",
        "data.patch_size=[48,48]", "data.batch_size=2", "aug=light", "model=unet_small", "trainer.max_epochs=2",
        "callbacks.rich_progress_bar=null",
    ))  # fmt: skip
    assert 0.0 <= metrics["val/miou"] <= 1.0
    grids = sorted(p.name for p in (tmp_path / "run" / "predictions").iterdir())
    assert grids == ["best.png", "epoch_000.png", "final.png"]  # whole validation images of 3 sizes


@pytest.mark.parametrize("ignore_index", [255, 7])
def test_patches_pad_small_images_with_the_ignore_index(tmp_path: Path, ignore_index: int) -> None:
    data = write_rgba_folder(tmp_path / "cells", sizes=[(30, 40)])

    def factory(transform):
        return FolderDataset(data / "train", 2, mask_mapping={0: 0, 255: 1}, ignore_index=ignore_index,
                             transform=transform)  # fmt: skip

    dm = SegmentationDataModule(factory, 2, val_dataset=factory, ignore_index=ignore_index, patch_size=(48, 48))
    dm.setup("fit")
    sample = dm.train_set[0]
    assert sample["image"].shape == (3, 48, 48)
    mask = sample["mask"]
    assert (mask == ignore_index).sum() == 48 * 48 - 30 * 40  # exactly the padded pixels
    assert set(mask.unique().tolist()) == {0, 1, ignore_index}
    assert dm.val_batch_size == 1 and dm.val_set[0]["image"].shape == (3, 30, 40)  # validation: whole image


def test_patch_scale_zooms_the_whole_image_before_the_crop(tmp_path: Path) -> None:
    data = write_rgba_folder(tmp_path / "cells", sizes=[(30, 40)])

    def module(scale, patch=(48, 48)):
        def factory(transform):
            return FolderDataset(data / "train", 2, mask_mapping={0: 0, 255: 1}, transform=transform)

        dm = SegmentationDataModule(factory, 2, val_dataset=factory, patch_size=patch, patch_scale=scale)
        dm.setup("fit")
        return dm

    zoomed_in = module([2.0, 2.0]).train_set[0]["mask"]  # 60x80 before the 48x48 crop: nothing to pad
    assert zoomed_in.shape == (48, 48) and 255 not in zoomed_in.unique().tolist()
    zoomed_out = module([0.8, 0.8]).train_set[0]["mask"]  # 24x32, then padded to 48x48
    assert (zoomed_out == 255).sum() == 48 * 48 - 24 * 32
    with pytest.raises(ValueError, match="set data.patch_size too"):
        module([0.75, 1.25], patch=None)
    with pytest.raises(ValueError, match="0 < low <= high"):
        module([1.25, 0.75])


def test_collate_error_suggests_what_works() -> None:
    samples = [{"image": torch.zeros(3, 8, 8), "name": "a"}, {"image": torch.zeros(3, 9, 8), "name": "b"}]
    with pytest.raises(ValueError, match=r"data\.patch_size=\[256,256\].*data\.val_batch_size=1"):
        collate(samples)


def ramp(h: int = 20, w: int = 50, high: int = 999) -> np.ndarray:
    return np.linspace(0, high, h * w).reshape(h, w)


@pytest.mark.parametrize("kind", ["png16", "tif16", "tif_float"])
def test_16_bit_and_float_images_are_read_and_scaled(tmp_path: Path, kind: str) -> None:
    values = ramp()
    if kind == "png16":
        path = tmp_path / "a.png"
        Image.fromarray(values.astype(np.uint16)).save(path)
    elif kind == "tif16":
        path = tmp_path / "a.tif"
        tifffile.imwrite(path, np.stack([values] * 3, axis=-1).astype(np.uint16))  # 16-bit RGB
    else:
        path = tmp_path / "a.tiff"
        tifffile.imwrite(path, (values / 1000).astype(np.float32))
    stored = values.astype(np.uint16) if kind != "tif_float" else (values / 1000).astype(np.float32)
    # fixed range: value / range
    hi = 1000.0 if kind != "tif_float" else 1.0
    fixed = read_image(path, "gray", IntensityNormalization("range", 0, hi))
    assert fixed.dtype == np.float32 and fixed.shape == (20, 50, 1)
    np.testing.assert_allclose(fixed[..., 0], stored / hi, atol=1e-3)  # RGB -> luma of equal channels
    # per-image percentiles, by hand
    lo, top = np.percentile(stored.astype(np.float32), [0.5, 99.5])
    scaled = read_image(path, "rgb", IntensityNormalization("percentile", 0.5, 99.5))
    assert scaled.shape == (20, 50, 3)
    np.testing.assert_allclose(scaled[..., 1], np.clip((stored - lo) / (top - lo), 0, 1), atol=1e-3)
    assert scaled.min() == 0.0 and scaled.max() == 1.0
    default = read_image(path, "gray")  # no intensity given: the percentile default
    np.testing.assert_allclose(default[..., 0], scaled[..., 0], atol=1e-3)


def test_8_bit_images_and_their_normalisation_are_unchanged(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "a.png")
    read = read_image(tmp_path / "a.png")
    assert read.dtype == np.uint8 and np.array_equal(read, image)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    ours = with_tail(None, mean, std)(image=read)["image"]
    reference = A.Compose([A.Normalize(mean=mean, std=std, max_pixel_value=255.0), A.pytorch.ToTensorV2()])
    assert torch.equal(ours, reference(image=read)["image"])


def test_16_bit_folder_feeds_normalised_tensors(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "images" / "s0.tif", np.full((24, 24), 1000, dtype=np.uint16))
    Image.fromarray(np.zeros((24, 24), dtype=np.uint8)).save(tmp_path / "masks" / "s0.png")
    dataset = FolderDataset(tmp_path, 2, color_mode="gray", intensity={"mode": "range", "low": 0, "high": 4000},
                            transform=with_tail(None, [0.5], [0.25]))  # fmt: skip
    image = dataset[0]["image"]
    assert image.dtype == torch.float32 and image.shape == (1, 24, 24)
    torch.testing.assert_close(image, torch.full((1, 24, 24), (0.25 - 0.5) / 0.25))
    with pytest.raises(ValueError, match="unknown keys"):
        FolderDataset(tmp_path, 2, intensity={"mode": "range", "lo": 0})


def test_sample_by_area_draws_each_image_as_often_as_its_pixels(tmp_path: Path) -> None:
    """A 100x72 image holds 8x the pixels of a 30x30 one: drawn by area it comes 8x as often, so every pixel is
    as likely to fall in a crop; by default every image comes equally often. A held-out subset weighs its own."""
    data = write_rgba_folder(tmp_path / "cells")  # train: 40x56, 64x64, 100x72, 30x30

    def factory(transform):
        return FolderDataset(data / "train", 2, mask_mapping={0: 0, 255: 1}, transform=transform)

    def counts(dm: SegmentationDataModule) -> np.ndarray:
        dm.setup("fit")
        drawn = list(dm.train_dataloader().sampler)
        return np.bincount(drawn, minlength=len(dm.train_set)) / len(drawn)

    areas = np.array([40 * 56, 64 * 64, 100 * 72, 30 * 30])
    common = {"val_dataset": factory, "patch_size": (48, 48), "batch_size": 2, "seed": 0}
    by_area = counts(SegmentationDataModule(factory, 2, samples_per_epoch=20000, sample_by_area=True, **common))
    np.testing.assert_allclose(by_area, areas / areas.sum(), atol=0.01)
    uniform = counts(SegmentationDataModule(factory, 2, samples_per_epoch=20000, **common))
    np.testing.assert_allclose(uniform, 0.25, atol=0.01)
    # no samples_per_epoch: an epoch is one training set's worth of draws, still by area
    dm = SegmentationDataModule(factory, 2, sample_by_area=True, **common)
    dm.setup("fit")
    assert len(dm.train_dataloader().sampler) == 4
    held_out = SegmentationDataModule(factory, 2, val_fraction=0.25, patch_size=(48, 48), sample_by_area=True,
                                      samples_per_epoch=20000)  # fmt: skip
    held_out.setup("fit")
    kept = areas[held_out.train_set.indices]
    drawn = np.bincount(list(held_out.train_dataloader().sampler), minlength=3) / 20000
    np.testing.assert_allclose(drawn, kept / kept.sum(), atol=0.01)


def test_sample_by_area_needs_image_files() -> None:
    from segkit.data.datamodule import image_areas

    with pytest.raises(ValueError, match="sample_by_area weighs image files"):
        image_areas(list(range(3)))
