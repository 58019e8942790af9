"""SegmentationDataModule: batch format, hold-out split, augmentation keeps masks in the class set."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from segkit.data import FolderDataset, SegmentationDataModule, SyntheticShapes

AUG_FILES = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "conf" / "aug").glob("*.yaml"))


def test_batches_are_float_images_and_int64_masks() -> None:
    dm = SegmentationDataModule(
        lambda transform: SyntheticShapes(8, transform=transform),
        num_classes=4,
        val_dataset=lambda transform: SyntheticShapes(4, seed=1, transform=transform),
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
        batch_size=2,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].dtype == torch.float32 and batch["image"].shape == (2, 3, 64, 64)
    assert batch["mask"].dtype == torch.int64 and batch["mask"].shape == (2, 64, 64)
    assert -3 < batch["image"].mean() < 3  # normalised, not 0..255


@pytest.mark.parametrize("patch_size", [64, [64], [64, 64, 3]])
def test_a_patch_size_that_is_not_height_and_width_is_named(patch_size) -> None:
    """``data.patch_size=64`` once failed inside ``len()`` with a TypeError that named no setting."""
    with pytest.raises(ValueError, match=r"data.patch_size must be \[height, width\]"):
        SegmentationDataModule(lambda transform: SyntheticShapes(2, transform=transform), num_classes=4,
                               patch_size=patch_size)  # fmt: skip


def test_hold_out_split_is_deterministic_and_disjoint(tmp_path: Path) -> None:
    from tests.conftest import write_pairs

    root = write_pairs(tmp_path, n=10)

    def factory(transform):
        return FolderDataset(root, num_classes=3, transform=transform)

    splits = []
    for _ in range(2):
        dm = SegmentationDataModule(factory, num_classes=3, val_fraction=0.3, split_seed=7)
        dm.setup("fit")
        splits.append((dm.train_set.indices, dm.val_set.indices))
    assert splits[0] == splits[1]
    train_idx, val_idx = splits[0]
    assert len(val_idx) == 3 and not set(train_idx) & set(val_idx)


def test_a_cached_folder_split_in_two_decodes_each_image_once(tmp_path: Path, monkeypatch) -> None:
    """The held-out part reads the training dataset's cache through the validation transform: building a
    second cached dataset would decode (and hold) the whole folder twice."""
    import segkit.data.folder as folder
    from tests.conftest import write_pairs

    root = write_pairs(tmp_path, n=10)
    reads: list[Path] = []
    real_read = folder.read_image
    monkeypatch.setattr(folder, "read_image", lambda path, *a: reads.append(path) or real_read(path, *a))

    def factory(transform):
        return FolderDataset(root, num_classes=3, mask_mapping={0: 0, 1: 1, 2: 2}, transform=transform, cache=True)

    flip = A.Compose([A.HorizontalFlip(p=1.0)])
    dm = SegmentationDataModule(factory, num_classes=3, val_fraction=0.3, train_transform=flip)
    dm.setup("fit")
    assert sorted(reads) == sorted(root / "images" / f"{i}.png" for i in range(10))
    i = dm.val_set.indices[0]
    held_out, as_trained = dm.val_set[0]["image"], dm.train_set.dataset[i]["image"]
    assert torch.equal(held_out, as_trained.flip(-1))  # validation reads it without the training flip
    assert not torch.equal(held_out, as_trained)


@pytest.mark.parametrize("aug", AUG_FILES)
def test_every_aug_config_keeps_masks_in_the_class_set(compose_cfg, aug: str) -> None:
    cfg = compose_cfg(f"aug={aug}")
    pipeline = instantiate(cfg.aug.train)
    if pipeline is None:
        return
    assert isinstance(pipeline, A.Compose)
    ds = SyntheticShapes(8, image_size=(300, 300))  # larger than any crop in conf/aug
    allowed = {0, 1, 2, 3, 255}
    for i in range(len(ds)):
        image, mask = ds.render(i)
        out = pipeline(image=image, mask=mask)
        assert set(torch.as_tensor(out["mask"]).unique().tolist()) <= allowed
        assert out["image"].shape[:2] == out["mask"].shape[:2]


def test_mixed_image_sizes_in_a_batch_give_a_clear_error() -> None:
    from segkit.data.datamodule import collate

    samples = [
        {"image": torch.zeros(3, 8, 8), "mask": torch.zeros(8, 8), "name": "a"},
        {"image": torch.zeros(3, 8, 9), "mask": torch.zeros(8, 9), "name": "b"},
    ]
    with pytest.raises(ValueError, match=r"\['a', 'b'\].*different image sizes"):
        collate(samples)


@pytest.mark.parametrize(("n", "world"), [(7, 2), (2, 3), (1, 2), (6, 8)])
def test_eval_sampler_covers_every_sample_once_and_gives_every_rank_work(n: int, world: int) -> None:
    from segkit.data.samplers import EvalDistributedSampler, PaddingMarked

    data = PaddingMarked([{"index": i} for i in range(n)])
    shares = [[data[i] for i in EvalDistributedSampler(data.dataset, num_replicas=world, rank=r)] for r in range(world)]
    assert {len(s) for s in shares} == {-(-n // world)}  # equal, non-zero shares: same batch count on every rank
    real = sorted(s["index"] for share in shares for s in share if not s["is_pad"])
    assert real == list(range(n))  # every sample exactly once; the repeats are marked as padding


def test_torch_sampler_would_count_a_sample_twice() -> None:
    from torch.utils.data import DistributedSampler

    padded = [list(DistributedSampler(list(range(7)), num_replicas=2, rank=r, shuffle=False)) for r in range(2)]
    assert len(padded[0] + padded[1]) == 8


class _SameImage(torch.utils.data.Dataset):
    """16 copies of one asymmetric image, so the output shows whether it was flipped."""

    def __init__(self, transform) -> None:
        self.transform = transform

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> dict:
        image = np.zeros((4, 4, 3), dtype=np.uint8)
        image[:, 0] = 255  # bright left column
        out = self.transform(image=image, mask=np.zeros((4, 4), dtype=np.uint8))
        return {"image": out["image"], "mask": torch.as_tensor(out["mask"]).long()}


def _flips(num_workers: int, seed: int) -> list[bool]:
    dm = SegmentationDataModule(
        _SameImage, num_classes=2, val_dataset=_SameImage, batch_size=1, num_workers=num_workers, seed=seed,
        train_transform=A.Compose([A.HorizontalFlip(p=0.5)]), mean=(0, 0, 0), std=(1, 1, 1),
    )  # fmt: skip
    dm.setup("fit")
    torch.manual_seed(0)
    return [bool(b["image"][0, 0, 0, 0] == 0) for b in dm.train_dataloader()]


def test_augmentation_is_seeded_and_workers_do_not_repeat_each_other() -> None:
    assert _flips(0, seed=1) == _flips(0, seed=1)
    flips = _flips(2, seed=1)
    assert flips == _flips(2, seed=1)  # reproducible with workers too
    assert flips[0::2] != flips[1::2]  # batches alternate between the 2 workers: their random streams differ
