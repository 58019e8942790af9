"""FolderDataset: image/mask pairs matched by file stem, checked before training starts."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from segkit.data.intensity import IntensityNormalization
from segkit.data.io import image_size, list_images, read_image, read_mask
from segkit.data.weight_map import WeightMaps


def check_ignore_index(ignore_index: int) -> None:
    """Masks are held as 8-bit class indices: an ignore value outside 0..255 would wrap (-100 becomes 156)."""
    if not 0 <= int(ignore_index) <= 255:
        raise ValueError(
            f"ignore_index={ignore_index} does not fit the 8-bit masks segkit reads (0..255); use a value there "
            "that is not a class, e.g. data.ignore_index=255"
        )


def lossy_mask_hint(path: Path | str) -> str:
    """What to say when a JPEG mask holds values no class has: its compression adds values near the true
    ones along every edge (a 0/255 mask comes back with 1-8 and 247-254), and no mapping lists them all."""
    if Path(str(path)).suffix.lower() not in (".jpg", ".jpeg"):
        return ""
    return ("it is a JPEG, whose compression blurs class values along every edge: save masks as PNG (binary "
            "0/255 ones also read with data.train_dataset.mask_threshold=127); else ")  # fmt: skip


class MaskEncoding:
    """Turns stored mask values into class indices: an explicit mapping, a threshold, or values as they are.

    Args:
        num_classes: valid class indices are ``0 .. num_classes - 1``.
        ignore_index: a value left as is and ignored by losses and metrics.
        mapping: stored value -> class index, e.g. ``{0: 1, 255: 0}``; values not listed are an error.
        threshold: stored value > threshold -> class 1, else 0 (binary masks saved with soft edges).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        mapping: Mapping[int, int] | None = None,
        threshold: float | None = None,
    ) -> None:
        if mapping is not None and threshold is not None:
            raise ValueError("give either a mask mapping or a mask threshold, not both")
        check_ignore_index(ignore_index)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.mapping = {int(k): int(v) for k, v in mapping.items()} if mapping is not None else None
        self.threshold = threshold
        if self.mapping is not None:
            bad = {k: v for k, v in self.mapping.items() if not (0 <= v < num_classes or v == ignore_index)}
            if bad:
                raise ValueError(f"mask mapping {bad} targets classes outside 0..{num_classes - 1}")

    def __call__(self, mask: np.ndarray, path: Path | str = "<mask>") -> np.ndarray:
        """Return the uint8/int64 class-index mask, or raise naming ``path`` and the offending values."""
        if self.threshold is not None:
            return (mask > self.threshold).astype(np.uint8)
        values = np.unique(mask)
        if self.mapping is not None:
            unknown = [int(v) for v in values if int(v) not in self.mapping]
            if unknown:
                raise ValueError(
                    f"mask {path} has values {unknown[:10]} that are not in the mask mapping "
                    f"{self.mapping}; {lossy_mask_hint(path)}add them to the mapping (map to {self.ignore_index} "
                    "to ignore them)"
                )
            out = np.empty(mask.shape, dtype=np.int64)
            for value in values:
                out[mask == value] = self.mapping[int(value)]
            return out
        unknown = [int(v) for v in values if not (0 <= v < self.num_classes or v == self.ignore_index)]
        if unknown:
            few = max(unknown) < 64  # class indices, by the look of them (a forgotten data.num_classes)
            hint = f"if they are classes, data.num_classes must be at least {max(unknown) + 1}; else " if few else ""
            hint = lossy_mask_hint(path) or hint
            raise ValueError(
                f"mask {path} has values {unknown[:10]} outside the class set 0..{self.num_classes - 1} "
                f"(ignore_index {self.ignore_index}); {hint}set a mask mapping or threshold in the data config"
            )
        return mask.astype(np.int64)


class FolderDataset(Dataset):
    """Image/mask pairs from ``root/images_dir`` and ``root/masks_dir``, paired by file stem.

    Every pair is checked when the dataset is built, so bad input fails before training with a message that
    names the file: missing partner, corrupt file, size mismatch, mask values outside the class set.

    Returns ``{"image": ..., "mask": ...}`` as produced by ``transform`` (the datamodule's gives a float
    ``(C, H, W)`` tensor and an int64 ``(H, W)`` tensor), plus ``"name"``: the file stem.

    Args:
        root: folder that holds the image and mask folders.
        num_classes: number of classes, background included.
        images_dir: image folder, relative to root.
        masks_dir: mask folder, relative to root.
        ignore_index: mask value ignored by losses and metrics.
        mask_mapping: stored mask value -> class index (e.g. ``{0: 1, 255: 0}``).
        mask_threshold: binarise masks as ``value > threshold`` instead of a mapping.
        mask_suffix: what a mask's file stem adds to its image's (``"_mask"`` for ``0001_mask.png`` beside
            ``0001.jpg``; Carvana's ``_mask``, ISIC's ``_segmentation``); ``""``: the same stem.
        stems: keep only these file stems (e.g. a validation split of slice numbers).
        exclude_stems: drop these file stems.
        color_mode: ``"rgb"`` (3 channels; alpha dropped) or ``"gray"`` (1 channel).
        intensity: how non-8-bit images are scaled to [0, 1], as ``{mode: percentile|range, low, high}``;
            ``None``: 8-bit images as they are, others by their 0.5-99.5 percentiles. See
            :class:`segkit.data.intensity.IntensityNormalization`.
        weight_map: the U-Net paper's border weight map per mask, as ``{cell_class, w0, sigma, cache_dir}``
            (:class:`segkit.data.weight_map.WeightMaps`); computed once, cached on disk, held in memory and passed
            through ``transform`` as the ``weight`` mask target, so it follows every geometric augmentation.
            Samples then hold ``"weight"``: a float ``(H, W)`` tensor, 0 on ignored pixels.
        transform: albumentations-style callable ``transform(image=..., mask=...) -> dict``.
        cache: decode every image once, at construction (beside the check that reads the masks anyway), and
            hold the images and class-index masks in memory, so that no training crop decodes its image again:
            on a few CPU cores, decoding a large PNG for every crop costs about as much as the training step.
            Filled before the loader's workers start, the cache is one copy that forked workers share (each
            worker filling its own would hold and decode the split once per worker). For splits that fit in
            memory; the planner turns it on for them.
    """

    def __init__(
        self,
        root: str | Path,
        num_classes: int,
        images_dir: str = "images",
        masks_dir: str = "masks",
        ignore_index: int = 255,
        mask_mapping: Mapping[int, int] | None = None,
        mask_threshold: float | None = None,
        mask_suffix: str = "",
        stems: Sequence[str | int] | None = None,
        exclude_stems: Sequence[str | int] | None = None,
        color_mode: str = "rgb",
        intensity: Mapping | IntensityNormalization | None = None,
        weight_map: Mapping | WeightMaps | None = None,
        transform: Callable[..., dict] | None = None,
        cache: bool = False,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {self.root} (check paths.data_dir)")
        self.encoding = MaskEncoding(num_classes, ignore_index, mask_mapping, mask_threshold)
        self.color_mode = color_mode
        self.intensity = IntensityNormalization.from_spec(intensity)
        self.transform = transform
        images = list_images(self.root / images_dir)
        masks = by_image_stem(list_images(self.root / masks_dir), mask_suffix)
        _check_pairs(images, masks, mask_suffix)
        names = list(images)
        if stems is not None:
            wanted = [str(s) for s in stems]
            missing = [s for s in wanted if s not in images]
            if missing:
                raise ValueError(f"stems {missing} are not in {self.root / images_dir}")
            names = [n for n in names if n in set(wanted)]
        if exclude_stems is not None:
            names = [n for n in names if n not in {str(s) for s in exclude_stems}]
        if not names:
            raise ValueError(f"no samples left in {self.root} after the stems/exclude_stems filters")
        self.samples = [(n, images[n], masks[n]) for n in names]
        maps = WeightMaps.from_spec(weight_map)
        self.weight_maps: list[np.ndarray] | None = [] if maps else None
        self.classes_present: list[tuple[int, ...]] = []  # per sample; stratifies k-fold splits
        self.masks_with_ignored = 0  # masks holding ignore_index pixels (check_labels_foreground)
        self.cached: list[tuple[np.ndarray, np.ndarray]] | None = [] if cache else None  # (image, mask)
        for _, image_path, mask_path in self.samples:
            mask = self._check(image_path, mask_path)
            values = np.unique(mask)
            self.classes_present.append(tuple(int(c) for c in values if c != ignore_index))
            self.masks_with_ignored += int(ignore_index in values)
            if maps:
                self.weight_maps.append(maps(mask, ignore_index))
            if self.cached is not None:
                self.cached.append((read_image(image_path, self.color_mode, self.intensity), mask.astype(np.uint8)))

    def _check(self, image_path: Path, mask_path: Path) -> np.ndarray:
        """Raise on a bad pair, naming the file; return the mask as class indices."""
        image_hw = image_size(image_path)
        mask = read_mask(mask_path)
        if mask.shape != image_hw:
            raise ValueError(
                f"mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} (WxH) but its image {image_path} is "
                f"{image_hw[1]}x{image_hw[0]}; masks must have the size of their image"
            )
        return self.encoding(mask, mask_path)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        name, image_path, mask_path = self.samples[index]
        if self.cached is None:
            sample = {"image": read_image(image_path, self.color_mode, self.intensity), "mask": self._mask(mask_path)}
        else:  # copies: a transform may write into its input, and the cache must stay as read
            sample = {"image": self.cached[index][0].copy(), "mask": self.cached[index][1].copy()}
        if self.weight_maps is not None:
            sample["weight"] = self.weight_maps[index]
        if self.transform is not None:
            sample = self.transform(**sample)
        out = {"image": torch.as_tensor(sample["image"]), "mask": torch.as_tensor(sample["mask"]).long(), "name": name}
        if self.weight_maps is not None:
            out["weight"] = torch.as_tensor(sample["weight"]).float()
        return out

    def _mask(self, mask_path: Path) -> np.ndarray:
        return self.encoding(read_mask(mask_path), mask_path).astype(np.uint8)


def check_labels_foreground(dataset: FolderDataset) -> None:
    """Refuse a training split whose masks label nothing but class 0 beside ignored pixels.

    Binary masks saved as 0/255 and read with the default ``ignore_index`` 255 do exactly that: every
    foreground pixel is ignored, so the run learns to answer background everywhere and scores it on
    background alone, without an error anywhere. A mapping or a threshold says how to read the masks, so
    with either the split is taken as it is."""
    encoding = dataset.encoding
    if encoding.mapping is not None or encoding.threshold is not None or not dataset.masks_with_ignored:
        return
    if any(c != 0 for present in dataset.classes_present for c in present):
        return
    value = encoding.ignore_index
    raise ValueError(
        f"{dataset.root}: the masks hold only 0 and {value}, and {value} is data.ignore_index: every pixel but the "
        f"background is ignored, and there is nothing else to learn. Binary masks saved as 0/{value}: "
        f"data.train_dataset.mask_mapping='{{0: 0, {value}: 1}}' (or data.train_dataset.mask_threshold=127); "
        f"if {value} does mark pixels to ignore, these masks label no foreground"
    )


def by_image_stem(masks: dict[str, Path], suffix: str) -> dict[str, Path]:
    """Masks keyed by the stem of the image they label: their own stem less ``suffix``. A mask without the
    suffix is an error naming it (it would pair with an image of its own stem, or with none)."""
    if not suffix:
        return masks
    unsuffixed = [str(path) for stem, path in masks.items() if not stem.endswith(suffix)]
    if unsuffixed:
        raise FileNotFoundError(f"{len(unsuffixed)} mask(s) do not end in mask_suffix={suffix!r}: {unsuffixed[:5]}")
    return {stem[: -len(suffix)]: path for stem, path in masks.items()}


def common_mask_suffix(images: Iterable[str], masks: Iterable[str]) -> str | None:
    """The suffix most mask stems add to an image stem (``0001_mask`` for ``0001``: ``"_mask"``), cut at a
    ``_``, ``-``, ``.`` or space; ``None`` when fewer than half the masks read that way."""
    images, masks = set(images), list(masks)
    found = Counter(stem[i:] for stem in masks for i in range(1, len(stem)) if stem[i] in "_-. " and stem[:i] in images)
    if not found:
        return None
    suffix, count = found.most_common(1)[0]
    return suffix if 2 * count >= len(masks) else None


def _check_pairs(images: dict[str, Path], masks: dict[str, Path], suffix: str = "") -> None:
    no_mask = [str(images[s]) for s in images if s not in masks]
    no_image = [str(masks[s]) for s in masks if s not in images]
    pairing = f"stem plus {suffix!r}" if suffix else "same stem"
    if no_mask:
        hint = ""
        if not suffix and (found := common_mask_suffix(images, masks)) is not None:
            hint = f"; the mask stems add {found!r} to the image stems: set data.train_dataset.mask_suffix={found}"
        raise FileNotFoundError(f"{len(no_mask)} image(s) have no mask with the {pairing}: {no_mask[:5]}{hint}")
    if no_image:
        raise FileNotFoundError(f"{len(no_image)} mask(s) have no image with the {pairing}: {no_image[:5]}")
