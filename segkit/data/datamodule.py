"""Lightning datamodules: datasets from factories, splits, the shared Normalize + ToTensor tail, loaders."""

from __future__ import annotations

import copy
import logging
import os
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytorch_lightning as pl
import torch.distributed as dist
from albumentations.pytorch import ToTensorV2
from torch.utils.data import DataLoader, Dataset, Subset, default_collate, get_worker_info

from segkit.data.crops import ForegroundCrop
from segkit.data.folder import FolderDataset, check_ignore_index, check_labels_foreground
from segkit.data.folds import fold_indices, holdout_indices, sample_strata
from segkit.data.image_folder import ImageFolderDataset
from segkit.data.io import image_size
from segkit.data.normalize import (
    DISPLAY_MEAN,
    DISPLAY_STD,
    PER_IMAGE,
    ImageStatistics,
    NormalizeAnyDepth,
    checked_mode,
)
from segkit.data.samplers import EpochSampler, EvalDistributedSampler, PaddingMarked
from segkit.data.settings import check_crop_settings, checked_batch_size, checked_patch_scale, checked_patch_size

log = logging.getLogger(__name__)

DatasetFactory = Callable[..., Dataset]


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def patch_sampler(
    patch_size: Sequence[int], ignore_index: int, scale: Sequence[float] | None = None, foreground: float = 0.0
) -> list[A.BasicTransform]:
    """Zoom the whole image by a random factor in ``scale`` (when given), pad to at least ``patch_size``
    (image 0, mask ``ignore_index``), then take a random ``patch_size`` crop, which holds a foreground pixel
    in a ``foreground`` share of the crops (:class:`~segkit.data.crops.ForegroundCrop`).

    Zooming before the crop keeps every pixel of the patch labelled and gives it the context of the whole
    image; an affine zoom after the crop fills a zoomed-out patch's borders with ignored pixels instead.
    """
    h, w = int(patch_size[0]), int(patch_size[1])
    zoom = []
    if scale is not None:
        low, high = checked_patch_scale(scale)
        zoom = [A.RandomScale(scale_limit=(low - 1.0, high - 1.0), p=1.0)]
    return [
        *zoom,
        A.PadIfNeeded(min_height=h, min_width=w, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=ignore_index),
        ForegroundCrop(h, w, foreground, ignore_index) if foreground else A.RandomCrop(height=h, width=w),
    ]


def with_tail(
    transform: A.Compose | None,
    mean: Sequence[float],
    std: Sequence[float],
    seed: int | None = None,
    head: Sequence[A.BasicTransform] = (),
    per_image: bool = False,
) -> A.Compose:
    """Wrap a pipeline as ``head + augmentations + Normalize + ToTensorV2``, so train, val and predict share
    one preprocessing tail.

    ``per_image``: z-score each image by its own statistics (:mod:`segkit.data.normalize`), read from the
    whole image before ``head`` crops it.

    ``head`` holds the training patch sampler; ``seed`` seeds the pipeline's own random state
    (albumentations ignores global seeds). A ``weight`` target (per-pixel loss weights, such as the U-Net
    paper's border weight map) is transformed like the mask.
    """
    ops = list(transform.transforms) if transform is not None else []
    share = float(getattr(transform, "p", 1.0)) if transform is not None else 1.0
    if ops and share < 1.0:  # the pipeline's own p (aug.train.p): the share of samples it augments
        ops = [A.Sequential(ops, p=share)]
    tail = [NormalizeAnyDepth(mean, std, per_image), ToTensorV2()]
    stats = [ImageStatistics()] if per_image else []
    return A.Compose([*stats, *head, *ops, *tail], seed=seed, additional_targets={"weight": "mask"})


def rank_seed(seed: int, rank: int) -> int:
    """``seed`` on rank 0 (single-process runs keep their streams); an independent 32-bit seed on other ranks."""
    if rank == 0:
        return seed % 2**32
    return int(np.random.SeedSequence([seed % 2**32, rank]).generate_state(1)[0])


def seed_worker_transforms(worker_id: int, rank: int = 0) -> None:
    """DataLoader ``worker_init_fn``: give each worker's augmentation pipeline its own seed.

    Workers start as copies of one pipeline, so without this they would apply the same random sequence.
    Torch's per-worker seed is derived from the global seed, which is the same on every rank, so the global
    rank is mixed in too: worker k on GPU 0 and worker k on GPU 1 draw different augmentations, and runs still
    repeat for a fixed seed and world size.
    """
    info = get_worker_info()
    dataset = info.dataset
    while isinstance(dataset, Subset):
        dataset = dataset.dataset
    transform = getattr(dataset, "transform", None)
    if isinstance(transform, A.Compose):
        transform.set_random_seed(rank_seed(info.seed, rank))


def sample_names(dataset: Dataset) -> list[str]:
    """File stems (folders) or relative paths (class folders) of a dataset's samples; indices otherwise."""
    samples = getattr(dataset, "samples", None)
    if samples is None:
        return [str(i) for i in range(len(dataset))]  # type: ignore[arg-type]
    names = [s[0] for s in samples]  # FolderDataset: (stem, image, mask); ImageFolderDataset: (path, label)
    root = getattr(dataset, "root", None)
    return [str(n.relative_to(root)) if isinstance(n, Path) and root is not None else str(n) for n in names]


def image_areas(dataset: Dataset) -> list[int]:
    """Each sample's image area in pixels (from the file headers), for datasets read from image files
    (:class:`FolderDataset`, and subsets of one)."""
    if isinstance(dataset, Subset):
        areas = image_areas(dataset.dataset)
        return [areas[i] for i in dataset.indices]
    samples = getattr(dataset, "samples", None)
    if samples is None or not all(len(s) == 3 for s in samples):
        raise ValueError(
            f"data.sample_by_area weighs image files by their size; {type(dataset).__name__} has none to read"
        )
    return [h * w for h, w in (image_size(Path(image)) for _, image, _ in samples)]


def collate(samples: list[dict]) -> dict:
    """``default_collate`` with a clear error when samples differ in size (instead of torch.stack's)."""
    sizes = {tuple(s["image"].shape) for s in samples}
    if len(sizes) > 1:
        names = [s.get("name", "?") for s in samples]
        raise ValueError(
            f"samples {names} in one batch have different image sizes {sorted(sizes)}. For training, set "
            "data.patch_size=[256,256] (random crops, smaller images padded); for validation, keep "
            "data.val_batch_size=1 (whole images one at a time)"
        )
    return default_collate(samples)


def unwrapped(dataset: Dataset | None) -> Dataset | None:
    """The dataset a hold-out or fold ``Subset`` views (its folder, class names, colour mode), or ``dataset``."""
    return getattr(dataset, "dataset", dataset)


class ImageDataModule(pl.LightningDataModule):
    """Builds train/val(/test) datasets from factories and feeds them to Lightning.

    Datasets are given as factories (Hydra ``_partial_: true`` nodes) that take ``transform=``; the
    datamodule owns the transform tail so no augmentation file can forget normalisation.

    Args:
        train_dataset: factory for the training set.
        num_classes: number of classes, background included.
        val_dataset: factory for the validation set; ``None`` holds out ``val_fraction`` of the training set.
        test_dataset: optional factory for a test set.
        class_names: names for logging (``val/iou_<name>``); default ``class_0``, ``class_1``, ...
        ignore_index: mask value ignored by losses and metrics (segmentation).
        val_fraction: share of the training set held out when there is no ``val_dataset``.
        split_seed: seed of that deterministic hold-out split, and of the k-fold split.
        num_folds: k-fold cross-validation: split the training set into this many folds, stratified by the
            classes each image contains (:mod:`segkit.data.folds`), validate on fold ``fold`` and train on
            the others; ``val_dataset`` is then not used. ``None``: no folds.
        fold: which fold validates, ``0 .. num_folds - 1``.
        mean: per-channel mean of the 0..1 image, used by Normalize; ``None``: ImageNet's (what pretrained
            encoders expect; train.py passes the loaded weights' own values when the config leaves it null).
        std: per-channel standard deviation, used by Normalize; ``None``: ImageNet's.
        normalization: ``"dataset"``: every image by ``mean`` and ``std``; ``"image"``: each image z-scored by
            its own per-channel mean and standard deviation (nnU-Net's scheme for non-CT images), ``mean`` and
            ``std`` unused. Saved with the model, so predict, eval and serve normalise the same way.
        train_transform: albumentations pipeline for training (augmentations only).
        val_transform: albumentations pipeline for validation and test.
        batch_size: training samples per batch on each device.
        patch_size: ``(H, W)`` of random training crops (images smaller than that are padded, their masks with
            ``ignore_index``); ``None``: the augmentation pipeline decides the size.
        patch_scale: ``[low, high]`` zoom factors: each training image is scaled by a random factor in that
            range before its ``patch_size`` crop is taken (e.g. ``[0.75, 1.25]`` for street scenes);
            ``None``: no zoom. Needs ``patch_size``.
        foreground_crops: the share of training crops placed on a random pixel of a random foreground class
            the image holds (nnU-Net's foreground oversampling: 0.33); the rest are uniform. Needs
            ``patch_size``.
        val_batch_size: validation/test samples per batch on each device; ``None``: 1 with ``patch_size`` (whole
            images of any size), else ``batch_size``.
        samples_per_epoch: training samples per epoch over all processes, drawn with replacement
            (:class:`EpochSampler`), so an epoch has the same number of steps for any dataset size; ``None``: one
            pass over the training set.
        sample_by_area: draw training images in proportion to their area (with replacement), so that every
            training pixel is as likely to fall in a crop; ``False``: every image equally often. On a folder of
            256² to 1040x1388 images, a quarter of the images hold three quarters of the pixels; drawn by area,
            they get three quarters of the crops. On the nuclei stand-in that lost (less variety a step: two
            seeds ahead, one 0.07 IoU behind; benchmarks/README.md), so the planner leaves it off.
        num_workers: loader processes per device; ``"auto"``: on GPUs ``min(8, CPUs per device - 1)`` (one
            worker prepares about 170 ISBI training crops a second with elastic deformation, while an H200
            consumes about 240), on CPUs ``min(2, CPUs per process)``.
        pin_memory: pin host memory for faster host-to-GPU copies; ``"auto"``: when training on a GPU.
        seed: seed of the augmentation pipelines (train.py passes the run's ``seed``); ``None``: not reproducible.
    """

    def __init__(
        self,
        train_dataset: DatasetFactory,
        num_classes: int,
        val_dataset: DatasetFactory | None = None,
        test_dataset: DatasetFactory | None = None,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        val_fraction: float = 0.2,
        split_seed: int = 0,
        num_folds: int | None = None,
        fold: int = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        normalization: str = "dataset",
        train_transform: A.Compose | None = None,
        val_transform: A.Compose | None = None,
        batch_size: int = 8,
        patch_size: Sequence[int] | None = None,
        patch_scale: Sequence[float] | None = None,
        foreground_crops: float = 0.0,
        val_batch_size: int | None = None,
        samples_per_epoch: int | None = None,
        sample_by_area: bool = False,
        num_workers: int | str = 0,
        pin_memory: bool | str = False,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"class_names has {len(class_names)} names but num_classes is {num_classes}")
        check_ignore_index(ignore_index)
        mean = IMAGENET_MEAN if mean is None else mean
        std = IMAGENET_STD if std is None else std
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} values but std has {len(std)}")
        self.train_factory = train_dataset
        self.val_factory = val_dataset
        self.test_factory = test_dataset
        self.num_classes = num_classes
        self.names_given = class_names is not None
        self.class_names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_classes)]
        self.ignore_index = ignore_index
        self.val_fraction = val_fraction
        self.split_seed = split_seed
        self.num_folds, self.fold = num_folds, fold
        self.split: dict[str, list[str]] | None = None  # names per split, for the run directory (folds.json)
        self.mean, self.std = tuple(mean), tuple(std)
        self.normalization = checked_mode(normalization)
        self.seed = seed
        self._seeded_for_rank = False
        self.patch_size = checked_patch_size(patch_size)
        check_crop_settings(self.patch_size is not None, patch_scale, foreground_crops)
        head = (
            patch_sampler(self.patch_size, ignore_index, patch_scale, foreground_crops)
            if self.patch_size is not None
            else []
        )
        per_image = self.normalization == PER_IMAGE
        self.train_transform = with_tail(train_transform, mean, std, seed, head, per_image)
        self.val_transform = with_tail(val_transform, mean, std, seed, per_image=per_image)
        self.batch_size = checked_batch_size(batch_size)
        self.samples_per_epoch = samples_per_epoch
        self.sample_by_area = bool(sample_by_area)
        self.val_batch_size = val_batch_size if val_batch_size is not None else (1 if patch_size else batch_size)
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    @property
    def display_stats(self) -> tuple[Sequence[float], Sequence[float]]:
        """Mean and std that turn a normalised image back into 0..1 for pictures (a z-scored image: ±2.5 std)."""
        return (DISPLAY_MEAN, DISPLAY_STD) if self.normalization == PER_IMAGE else (self.mean, self.std)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets (all files are checked here, before the first step)."""
        if self.train_set is None:
            train = self.train_factory(transform=self.train_transform)
            if self.num_folds:
                self.train_set, self.val_set = self._fold(train)
            elif self.val_factory is not None:
                self.train_set = train
                self.val_set = self.val_factory(transform=self.val_transform)
            else:
                self.train_set, self.val_set = self._hold_out(train)
        if self.test_factory is not None and self.test_set is None and stage in ("test", None):
            self.test_set = self.test_factory(transform=self.val_transform)

    def _hold_out(self, train: Dataset) -> tuple[Dataset, Dataset]:
        train_idx, val_idx = holdout_indices(len(train), self.val_fraction, self.split_seed)  # type: ignore[arg-type]
        val = self._read_with(train, self.val_transform)
        return Subset(train, train_idx), Subset(val, val_idx)

    def _fold(self, train: Dataset) -> tuple[Dataset, Dataset]:
        """Fold ``fold`` of the training set validates; the other folds train. Names go to ``self.split``."""
        train_idx, val_idx = fold_indices(sample_strata(train), int(self.num_folds), int(self.fold), self.split_seed)
        names = sample_names(train)
        self.split = {"train": [names[i] for i in train_idx], "val": [names[i] for i in val_idx]}
        if self.val_factory is not None:
            log.info("Fold %d of %d validates; data.val_dataset is not used (score it with segkit.eval data=...)",
                     self.fold, self.num_folds)  # fmt: skip
        val = self._read_with(train, self.val_transform)
        return Subset(train, train_idx), Subset(val, val_idx)

    def _read_with(self, dataset: Dataset, transform: Callable | None) -> Dataset:
        """``dataset``'s samples through another transform, for the part of the training folder that validates.

        A shallow copy shares what the dataset holds (its decoded cache, weight maps), so neither is read or
        kept twice; a dataset without a ``transform`` attribute is built again from the factory."""
        if not hasattr(dataset, "transform"):
            return self.train_factory(transform=transform)
        view = copy.copy(dataset)
        view.transform = transform
        return view

    def _on_gpu(self) -> bool:
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def loader_workers(self) -> int:
        """``num_workers``, with ``"auto"`` resolved for the device the trainer runs on."""
        if self.num_workers != "auto":
            return int(self.num_workers)
        devices = self.trainer.num_devices if self.trainer is not None else 1
        cpus = max(1, (os.cpu_count() or 1) // max(1, devices))
        return min(8, max(1, cpus - 1)) if self._on_gpu() else min(2, cpus)

    @property
    def global_rank(self) -> int:
        """This process's rank (0 without a trainer or outside DDP)."""
        return self.trainer.global_rank if self.trainer is not None else 0

    def _loader(self, dataset: Dataset | None, training: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for a dataloader")
        # Training: a shuffled pass (Lightning swaps in its distributed sampler under DDP), or fixed-length
        # epochs drawn per rank. Evaluation under DDP: a sampler whose padding is marked, so metrics count every
        # sample exactly once and every rank has batches even with fewer samples than processes (Lightning
        # leaves DistributedSampler subclasses alone).
        sampler = None
        if training and (self.samples_per_epoch or self.sample_by_area):
            weights = self._area_weights(dataset) if self.sample_by_area else None
            length = self.samples_per_epoch or len(dataset)  # type: ignore[arg-type]
            sampler = EpochSampler(dataset, length, seed=self.seed or 0, weights=weights)
        if not training and dist.is_available() and dist.is_initialized():
            sampler = EvalDistributedSampler(dataset)
            dataset = PaddingMarked(dataset)
        rank, workers = self.global_rank, self.loader_workers()
        pin_memory = self._on_gpu() if self.pin_memory == "auto" else bool(self.pin_memory)
        if training and self.seed is not None and not self._seeded_for_rank:
            self.train_transform.set_random_seed(rank_seed(self.seed, rank))  # used as is with num_workers=0
            self._seeded_for_rank = True
        return DataLoader(
            dataset,
            batch_size=self.batch_size if training else self.val_batch_size,
            shuffle=training and sampler is None,
            sampler=sampler,
            drop_last=training and len(sampler or dataset) > self.batch_size,  # type: ignore[arg-type]
            num_workers=workers,
            pin_memory=pin_memory,
            persistent_workers=workers > 0,
            worker_init_fn=partial(seed_worker_transforms, rank=rank) if workers > 0 else None,
            collate_fn=collate,
        )

    def _area_weights(self, dataset: Dataset) -> list[int]:
        areas = image_areas(dataset)
        if self.global_rank == 0:
            log.info("Training images drawn by area (data.sample_by_area): %d to %d px, the largest %.1fx as often "
                     "as the smallest", min(areas), max(areas), max(areas) / min(areas))  # fmt: skip
        return areas

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches (the last incomplete batch is dropped: BatchNorm hates batch size 1)."""
        return self._loader(self.train_set, training=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        return self._loader(self.val_set, training=False)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order."""
        return self._loader(self.test_set, training=False)


class SegmentationDataModule(ImageDataModule):
    """Image/mask batches ``{"image": (B, C, H, W) float, "mask": (B, H, W) int64}`` for segmentation."""

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets, and refuse a training folder with no foreground to learn
        (:func:`segkit.data.folder.check_labels_foreground`)."""
        super().setup(stage)
        train = unwrapped(self.train_set)
        if isinstance(train, FolderDataset):
            check_labels_foreground(train)


class ClassificationDataModule(ImageDataModule):
    """Image/label batches ``{"image": (B, C, H, W) float, "label": (B,) int64}`` for classification.

    Class names come from the training dataset (ImageFolder folder names) unless given; ``num_classes`` must
    match them, so a missing or extra class folder fails before training. A label is the place of its folder
    among the sorted class folders, so the validation and test folders must hold the same class folders.
    """

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets, take the class names from the training set and check the other splits'."""
        super().setup(stage)
        dataset = unwrapped(self.train_set)
        names = list(getattr(dataset, "class_names", self.class_names))
        if len(names) != self.num_classes:
            raise ValueError(
                f"data.num_classes={self.num_classes} but the training set has {len(names)} classes {names}"
            )
        if not self.names_given:
            self.class_names = names
        self._check_every_class_trains(dataset, names)
        for split, evaluated in (("val", unwrapped(self.val_set)), ("test", unwrapped(self.test_set))):
            other = getattr(evaluated, "class_names", None)
            if other is not None and list(other) != names:
                raise ValueError(
                    f"{getattr(evaluated, 'root', split)} has class folders {list(other)} but the training set "
                    f"{getattr(dataset, 'root', '')} has {names}: a label is its folder's place in that list, so "
                    f"the {split} labels would name other classes. Give the {split} folder the training set's "
                    "class folders (an empty folder for a class with no images there)"
                )

    @staticmethod
    def _check_every_class_trains(dataset: Dataset, names: list[str]) -> None:
        """Refuse a training class without images (an empty class folder), as torchvision's ImageFolder does: the
        run trained without a word, never predicted the class, and reported its recall as 0."""
        if not isinstance(dataset, ImageFolderDataset):
            return
        present = set(dataset.labels)
        empty = [name for k, name in enumerate(names) if k not in present]
        if empty:
            raise ValueError(
                f"{dataset.root}: class folder(s) {empty} hold no images, so the network could never learn them: add "
                "images, or remove the folder(s) (from the val and test folders too) and lower data.num_classes"
            )
