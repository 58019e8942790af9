"""ImageFolderDataset and the classification datamodule: folder classes, bad files, synthetic classes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import write_class_folders

from segkit.data import ClassificationDataModule, ImageFolderDataset, SyntheticShapeClasses


def test_classes_come_from_folder_names_and_palette_images_become_rgb(tmp_path: Path) -> None:
    root = write_class_folders(tmp_path)
    (root / "__MACOSX" / "ants").mkdir(parents=True)  # a zip made on a Mac: not a class
    (root / "ants" / "._0.png").write_bytes(b"Mac OS X metadata")
    ds = ImageFolderDataset(root)
    assert ds.class_names == ["ants", "bees"] and len(ds) == 7
    assert ds.labels.count(0) == 4
    gif = next(i for i, (p, _) in enumerate(ds.samples) if p.suffix == ".gif")
    assert ds[gif]["image"].shape == (30, 30, 3)


def test_non_image_file_is_an_error_naming_it_unless_skipped(tmp_path: Path, caplog) -> None:
    root = write_class_folders(tmp_path)
    (root / "bees" / "notes.txt").write_text("not a bee")
    with pytest.raises(ValueError, match=r"bees/notes\.txt: not an image file"):
        ImageFolderDataset(root)
    (root / "bees" / "notes.txt").unlink()
    (root / "bees" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    with pytest.raises(ValueError, match=r"bees/broken\.jpg"):
        ImageFolderDataset(root)
    assert len(ImageFolderDataset(root, skip_invalid=True)) == 7
    assert any(r.levelname == "WARNING" and "bees/broken.jpg" in r.getMessage() for r in caplog.records)


def test_datamodule_checks_num_classes_and_batches_labels(tmp_path: Path) -> None:
    from segkit.data.datamodule import ClassificationDataModule as DM

    root = write_class_folders(tmp_path, n=4)

    def factory(transform):
        import albumentations as A

        resize = A.Compose([A.Resize(32, 32), *transform.transforms])
        return ImageFolderDataset(root, transform=resize)

    dm = DM(factory, num_classes=2, val_fraction=0.25, batch_size=3)
    dm.setup("fit")
    assert dm.class_names == ["ants", "bees"]
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (3, 3, 32, 32) and batch["label"].dtype == torch.int64
    with pytest.raises(ValueError, match="num_classes=3"):
        ClassificationDataModule(factory, num_classes=3).setup("fit")


def test_a_val_folder_with_other_class_folders_is_refused_by_name(tmp_path: Path) -> None:
    """A val folder holding only ``bees/`` labelled its bees 0, the training set's ants: val/acc 0, silently."""
    from functools import partial

    train = write_class_folders(tmp_path / "train", n=2)
    val = write_class_folders(tmp_path / "val", classes=("bees",), n=2)
    dm = ClassificationDataModule(partial(ImageFolderDataset, train), 2, partial(ImageFolderDataset, val))
    with pytest.raises(
        ValueError, match=r"val has class folders \['bees'\] but the training set .* has \['ants', 'bees'\]"
    ):
        dm.setup("fit")
    (val / "ants").mkdir()  # an empty folder for a class the split lacks
    dm = ClassificationDataModule(partial(ImageFolderDataset, train), 2, partial(ImageFolderDataset, val))
    dm.setup("fit")
    assert {s["label"].item() for s in dm.val_set} == {1}  # bees are 1, as in training


def test_a_training_class_folder_without_images_is_refused_by_name(tmp_path: Path) -> None:
    """An empty ``train/wasps/`` trained without a word; the run never predicted wasps and reported their recall 0."""
    from functools import partial

    train = write_class_folders(tmp_path / "train", n=2)
    (train / "wasps").mkdir()
    dm = ClassificationDataModule(partial(ImageFolderDataset, train), 3)
    with pytest.raises(ValueError, match=r"train: class folder\(s\) \['wasps'\] hold no images"):
        dm.setup("fit")


def test_synthetic_shape_classes_are_balanced_enough_and_deterministic() -> None:
    ds = SyntheticShapeClasses(60, seed=2)
    labels = ds.labels
    assert set(labels) == {0, 1, 2} and min(labels.count(c) for c in range(3)) >= 10
    assert torch.equal(ds[3]["image"], SyntheticShapeClasses(60, seed=2)[3]["image"])
