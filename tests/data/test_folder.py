"""FolderDataset pairing, mask encodings and a clear error for each kind of bad input."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from segkit.data import FolderDataset, MaskEncoding
from tests.conftest import write_pairs


def test_pairs_by_stem_in_natural_order(tmp_path: Path) -> None:
    root = write_pairs(tmp_path, n=12)
    ds = FolderDataset(root, num_classes=3)
    assert [name for name, _, _ in ds.samples] == [str(i) for i in range(12)]  # 2 before 10
    item = ds[0]
    assert item["image"].shape == (32, 48, 3) and item["mask"].shape == (32, 48)
    assert set(item["mask"].unique().tolist()) <= {0, 1, 2}


def test_cache_decodes_each_image_once_and_returns_the_same_samples(tmp_path: Path, monkeypatch) -> None:
    import segkit.data.folder as folder

    root = write_pairs(tmp_path, n=3)
    plain = FolderDataset(root, num_classes=3, mask_mapping={0: 0, 1: 1, 2: 2})
    reads: list[Path] = []
    real_read = folder.read_image
    monkeypatch.setattr(folder, "read_image", lambda path, *a: reads.append(path) or real_read(path, *a))

    def scribble(image, mask):  # a transform that writes into its input must not change the cache
        image[:] = 0
        mask[:] = 2
        return {"image": image, "mask": mask}

    cached = FolderDataset(root, num_classes=3, mask_mapping={0: 0, 1: 1, 2: 2}, cache=True, transform=scribble)
    # decoded once, at construction: before the loader's workers fork, so that they share one copy
    assert reads == [root / "images" / f"{i}.png" for i in range(3)]
    for _ in range(3):
        cached[1]
    assert len(reads) == 3  # no crop decodes again; the masks come from the check at start-up
    cached.transform = None
    for i in range(3):
        assert np.array_equal(cached[i]["image"], plain[i]["image"])
        assert np.array_equal(cached[i]["mask"], plain[i]["mask"])


def test_stems_and_exclude_stems_split_one_folder(tmp_path: Path) -> None:
    root = write_pairs(tmp_path, n=6)
    val = FolderDataset(root, num_classes=3, stems=[4, 5])
    train = FolderDataset(root, num_classes=3, exclude_stems=[4, 5])
    assert [s[0] for s in val.samples] == ["4", "5"]
    assert [s[0] for s in train.samples] == ["0", "1", "2", "3"]


def test_mask_mapping_and_threshold() -> None:
    stored = np.array([[0, 255], [255, 0]], dtype=np.uint8)
    mapped = MaskEncoding(num_classes=2, mapping={0: 1, 255: 0})(stored)
    np.testing.assert_array_equal(mapped, [[1, 0], [0, 1]])
    soft = np.array([[0, 100], [128, 250]], dtype=np.uint8)
    np.testing.assert_array_equal(MaskEncoding(num_classes=2, threshold=127)(soft), [[0, 0], [1, 1]])


def test_gray_and_rgba_images(tmp_path: Path) -> None:
    root = write_pairs(tmp_path, n=1)
    rgba = np.full((32, 48, 4), 200, dtype=np.uint8)
    Image.fromarray(rgba).save(root / "images" / "0.png")
    assert FolderDataset(root, num_classes=3)[0]["image"].shape == (32, 48, 3)
    assert FolderDataset(root, num_classes=3, color_mode="gray")[0]["image"].shape == (32, 48, 1)


def test_missing_mask_names_the_image(tmp_path: Path) -> None:
    root = write_pairs(tmp_path, n=3)
    (root / "masks" / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"images/1\.png"):
        FolderDataset(root, num_classes=3)


def test_missing_image_names_the_mask(tmp_path: Path) -> None:
    root = write_pairs(tmp_path, n=3)
    (root / "images" / "2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"masks/2\.png"):
        FolderDataset(root, num_classes=3)


def test_masks_named_with_a_suffix_pair_through_mask_suffix_and_the_error_finds_it(tmp_path: Path) -> None:
    """Carvana's ``0001_mask.gif`` beside ``0001.jpg``, ISIC's ``_segmentation``: pairing by the same stem
    found no mask for any image, and the error did not say why."""
    root = write_pairs(tmp_path, n=3)
    for mask in (root / "masks").iterdir():
        mask.rename(mask.with_name(f"{mask.stem}_mask{mask.suffix}"))
    with pytest.raises(FileNotFoundError, match=r"3 image\(s\) have no mask with the same stem: .*; the mask stems "
                       r"add '_mask' to the image stems: set data.train_dataset.mask_suffix=_mask$"):  # fmt: skip
        FolderDataset(root, num_classes=3)
    dataset = FolderDataset(root, num_classes=3, mask_suffix="_mask")
    assert [(name, mask.name) for name, _, mask in dataset.samples] == [(f"{i}", f"{i}_mask.png") for i in range(3)]
    (root / "masks" / "2_mask.png").rename(root / "masks" / "2.png")  # one mask without the suffix
    with pytest.raises(FileNotFoundError, match=r"1 mask\(s\) do not end in mask_suffix='_mask': .*masks/2\.png"):
        FolderDataset(root, num_classes=3, mask_suffix="_mask")
    (root / "masks" / "2.png").rename(root / "masks" / "3_mask.png")  # a mask for an image that is not there
    with pytest.raises(FileNotFoundError, match=r"1 image\(s\) have no mask with the stem plus '_mask'"):
        FolderDataset(root, num_classes=3, mask_suffix="_mask")


def test_a_phone_photo_stored_sideways_is_read_upright_as_its_mask_was_drawn(tmp_path: Path) -> None:
    """A JPEG whose EXIF orientation (6) turns its stored 96x64 pixels into a 64x96 portrait: viewers and
    annotation tools show it upright, so its mask is upright. segkit read the stored pixels and refused the
    pair for a size mismatch the user could not see."""
    from segkit.data.io import image_size, read_image_bytes

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    shown = np.zeros((96, 64, 3), np.uint8)
    shown[10:30, 20:40] = 250  # a bright square near the top of the portrait
    mask = (shown[..., 0] > 0).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # shown after turning 90 degrees clockwise
    Image.fromarray(shown).transpose(Image.Transpose.ROTATE_90).save(tmp_path / "images" / "a.jpg", exif=exif)
    Image.fromarray(mask).save(tmp_path / "masks" / "a.png")
    assert Image.open(tmp_path / "images" / "a.jpg").size == (96, 64)  # stored sideways
    assert image_size(tmp_path / "images" / "a.jpg") == (96, 64)  # (H, W) as shown
    sample = FolderDataset(tmp_path, num_classes=2)[0]
    image = np.asarray(sample["image"])
    assert image.shape == (96, 64, 3) and image[10:30, 20:40].mean() > 200 and image[50:].mean() < 20
    assert np.array_equal(np.asarray(sample["mask"]), mask)
    upload = read_image_bytes((tmp_path / "images" / "a.jpg").read_bytes(), "a.jpg")  # serve reads it alike
    assert np.array_equal(upload, image)


def test_a_macs_appledouble_files_are_not_images(tmp_path: Path) -> None:
    """A folder copied from a Mac holds ``._0.png`` beside ``0.png`` (metadata under an image's name): they
    paired with each other and stopped the run as a corrupt image."""
    write_pairs(tmp_path, n=2)
    for sub in ("images", "masks"):
        (tmp_path / sub / "._0.png").write_bytes(b"\x00\x05\x16\x07 Mac OS X metadata")
    dataset = FolderDataset(tmp_path, num_classes=3)
    assert [Path(image).name for _, image, _ in dataset.samples] == ["0.png", "1.png"]


def test_size_mismatch_names_both_files(tmp_path: Path) -> None:
    root = write_pairs(tmp_path, n=2)
    Image.fromarray(np.zeros((10, 10), dtype=np.uint8)).save(root / "masks" / "1.png")
    with pytest.raises(ValueError, match=r"masks/1\.png is 10x10.*images/1\.png is 48x32"):
        FolderDataset(root, num_classes=3)


def test_unknown_mask_values_are_named(tmp_path: Path) -> None:
    root = write_pairs(tmp_path, n=2, values=(0, 1, 7))
    hint = r"values \[7\] outside the class set 0\.\.2 \(ignore_index 255\); if they are classes, data.num_classes"
    with pytest.raises(ValueError, match=hint + " must be at least 8; else set a mask mapping"):
        FolderDataset(root, num_classes=3)
    soft = write_pairs(tmp_path / "soft", n=2, values=(0, 128))  # soft edges: no class count would mean them
    with pytest.raises(ValueError, match=r"values \[128\] .* \(ignore_index 255\); set a mask mapping or threshold"):
        FolderDataset(soft, num_classes=2)
    with pytest.raises(ValueError, match="not in the mask mapping"):
        FolderDataset(root, num_classes=3, mask_mapping={0: 0, 1: 1})


def test_jpeg_masks_are_named_as_lossy_with_the_way_out(tmp_path: Path) -> None:
    """A 0/255 mask saved as JPEG reads back with 1-8 and 247-254 along its edges: the error suggested
    ``data.num_classes`` of at least 9, or a mapping that could never list every value."""
    write_pairs(tmp_path, n=2, values=(0, 1))
    for path in sorted((tmp_path / "masks").iterdir()):
        mask = np.zeros((32, 48), np.uint8)
        mask[8:24, 10:30] = 255
        Image.fromarray(mask).save(path.with_suffix(".jpg"), quality=90)
        path.unlink()
    lossy = "it is a JPEG, whose compression blurs class values along every edge: save masks as PNG"
    with pytest.raises(ValueError, match=lossy):
        FolderDataset(tmp_path, num_classes=2)
    with pytest.raises(ValueError, match=lossy):
        FolderDataset(tmp_path, num_classes=2, mask_mapping={0: 0, 255: 1})
    binary = FolderDataset(tmp_path, num_classes=2, mask_threshold=127)[0]["mask"]
    assert np.asarray(binary)[8:24, 10:30].all() and abs(int(np.asarray(binary).sum()) - 16 * 20) <= 4


def test_ignore_index_is_allowed_in_masks(tmp_path: Path) -> None:
    root = write_pairs(tmp_path, n=2, values=(0, 1, 255))
    assert 255 in FolderDataset(root, num_classes=3)[0]["mask"].unique().tolist()


def test_corrupt_image_is_named(tmp_path: Path) -> None:
    root = write_pairs(tmp_path, n=2)
    (root / "images" / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(ValueError, match=r"cannot read image .*images/1\.png"):
        FolderDataset(root, num_classes=3)


def test_truncated_mask_is_named(tmp_path: Path) -> None:
    root = write_pairs(tmp_path, n=2)
    data = (root / "masks" / "0.png").read_bytes()
    (root / "masks" / "0.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"masks/0\.png"):
        FolderDataset(root, num_classes=3)


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        FolderDataset(tmp_path, num_classes=2)
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        FolderDataset(tmp_path / "nope", num_classes=2)


def test_colour_masks_are_refused(tmp_path: Path) -> None:
    root = write_pairs(tmp_path, n=1)
    Image.fromarray(np.random.default_rng(0).integers(0, 3, (32, 48, 3), dtype=np.uint8)).save(root / "masks" / "0.png")
    with pytest.raises(ValueError, match="colour image"):
        FolderDataset(root, num_classes=3)


def test_an_ignore_index_outside_8_bits_is_refused(tmp_path: Path) -> None:
    from segkit.data import SegmentationDataModule
    from segkit.data.folder import MaskEncoding

    with pytest.raises(ValueError, match="ignore_index=-100 does not fit the 8-bit masks"):
        MaskEncoding(2, ignore_index=-100)
    with pytest.raises(ValueError, match="ignore_index=300"):
        SegmentationDataModule(train_dataset=None, num_classes=2, ignore_index=300)


def test_binary_masks_saved_as_0_255_are_refused_before_training_on_background_alone(tmp_path: Path) -> None:
    """0/255 masks read with the default ignore_index 255 trained without a word: every foreground pixel
    ignored, the model taught background. The datamodule now names the folder and the mapping to set; with
    the mapping, or with masks that label a class besides 0, it trains as before."""
    from segkit.data import SegmentationDataModule

    def datamodule(values: tuple[int, ...], **mapping) -> SegmentationDataModule:
        root = write_pairs(tmp_path / "-".join(map(str, values)) / "train", n=4, values=values)
        factory = partial(FolderDataset, root, num_classes=2, **mapping)
        return SegmentationDataModule(factory, val_dataset=None, num_classes=2, patch_size=None, batch_size=2)

    with pytest.raises(ValueError, match=r"0-255/train: the masks hold only 0 and 255, and 255 is data.ignore_index"
                                         r".*mask_mapping='\{0: 0, 255: 1\}'"):  # fmt: skip
        datamodule((0, 255)).setup("fit")
    mapped = datamodule((0, 255), mask_mapping={0: 0, 255: 1})
    mapped.setup("fit")
    assert 1 in next(iter(mapped.train_dataloader()))["mask"].unique().tolist()
    datamodule((0, 1, 255)).setup("fit")  # 255 beside a labelled class: pixels meant to be ignored
