"""Predictor: segment images of any size with a trained model, the way training saw them.

It reads images as training did (channels, intensity scaling, mean/std from the model's metadata), runs the
sliding window in the model's training precision, and returns logits, probabilities or class indices. The
predict and eval commands, ``test_after_fit`` and notebooks all go through it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from segkit.data.intensity import IntensityNormalization
from segkit.data.io import read_image, read_image_bytes
from segkit.data.normalize import PER_IMAGE, NormalizeAnyDepth
from segkit.data.settings import checked_size
from segkit.inference.ensemble import Ensemble, check_members, member_paths
from segkit.inference.model_files import LoadedModel, load_model, metadata_value, precision_name
from segkit.inference.sliding_window import WHOLE_IMAGE_PIXELS, SlidingWindow, default_tile
from segkit.metrics.binary import two_class_logits
from segkit.precision import NO_FAST_BF16, cpu_has_fast_bf16


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA GPU is visible; use device=cpu or device=auto")
    return torch.device(device)


def inference_precision(given: str | None, trained: str | None, device: torch.device) -> tuple[str, str]:
    """The precision to predict in and why: as given, else as the model was trained (fp32 when it does not
    say), except bf16 on a CPU without oneDNN bf16 kernels, where it ran 9-16x slower than fp32."""
    if given:
        return given, "as given"
    if not trained:
        return "fp32", "the model does not say how it was trained"
    if trained == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        return "fp32", f"trained in bf16, but {NO_FAST_BF16}; precision=bf16 forces it"
    return trained, "as the model was trained"


class Predictor:
    """Segments images of any size with a trained segkit model.

    Args:
        model: a :class:`segkit.LoadedModel` or a path :func:`segkit.load_model` accepts; or several of them,
            or a multirun directory of runs (``python -m segkit.train -m ...``): an ensemble, whose class
            probabilities are averaged tile by tile (:mod:`segkit.inference.ensemble`).
        tile: input tile ``(h, w)``; ``None``: what validation scored, the whole image as one tile (mirrored
            for valid padding) when it has at most ``WHOLE_IMAGE_PIXELS`` pixels, for a valid-padding model or
            one trained on whole images (its metadata records no training crop); larger images and other
            models: tiles of the training crop (256x256 when the metadata does not say).
        overlap: share of a tile shared with its neighbours.
        tta: ``"none"``, ``"hflip"``, ``"flips"`` or ``"d4"``; ``None``: the model's own (the ``tta`` its run
            recorded, which the planner chooses from the data's symmetry; none when it recorded none).
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast); ``None``: the precision the model was trained
            in (its metadata; fp32 when it does not say), so a model is run as it was trained, but a bf16 model
            in fp32 on a CPU without bf16 kernels (:mod:`segkit.precision`).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        tile_batch_size: tiles per forward pass.
    """

    def __init__(
        self,
        model: LoadedModel | str | Path | Sequence[LoadedModel | str | Path],
        tile: Sequence[int] | None = None,
        overlap: float = 0.5,
        tta: str | None = None,
        precision: str | None = None,
        device: str = "auto",
        tile_batch_size: int = 4,
    ) -> None:
        self.members = members(model)
        first = self.members[0]
        self.model = first
        if len(self.members) > 1:
            sources = [str(m.source) for m in self.members]
            self.model = LoadedModel(Ensemble([m.net for m in self.members]), first.metadata, first.source,
                                     {"members": sources})  # fmt: skip
        meta = self.model.metadata
        if self.model.task != "segmentation":
            raise ValueError(
                f"{self.model.source} is a {self.model.task} model, and predict, eval and serve take segmentation "
                "models: its validation scores are in its run's metrics.json, and segkit.load_model(...) loads it"
            )
        self.in_channels = int(meta["in_channels"])
        if self.in_channels not in (1, 3):
            raise ValueError(
                f"the model takes {self.in_channels} input channels; images are read as grey (1) or RGB (3), "
                "so predict cannot feed it"
            )
        self.color_mode = meta.get("color_mode") or ("gray" if self.in_channels == 1 else "rgb")
        self.intensity = IntensityNormalization.from_spec(meta.get("intensity"))
        if meta.get("mean") is None or meta.get("std") is None:
            raise ValueError(f"{self.model.source}: the model's metadata has no mean/std normalisation")
        per_image = metadata_value(meta, "normalization") == PER_IMAGE
        self.normalize = NormalizeAnyDepth(meta["mean"], meta["std"], per_image)
        self.device = resolve_device(device)
        net = self.model.net.to(self.device).to(memory_format=torch.channels_last).eval()
        self.precision, self.precision_reason = inference_precision(precision, meta.get("precision"), self.device)
        self.tta_reason = "as given" if tta else "as the model's run recorded" if meta.get("tta") else "none recorded"
        tta = None if tta == "none" else tta or meta.get("tta")
        self.tile_given = bool(tile)
        tile = checked_size(tile, "tile") or default_tile(net, meta.get("patch_size"))
        window = (net, overlap, 0.125, tile_batch_size, tta, self.device, self.precision)
        self.window = SlidingWindow(net, tile, *window[1:])
        # A model file that does not say (no "patch_size" key, hand-written metadata) tiles as it always did.
        whole = meta.get("padding") == "valid" or ("patch_size" in meta and not meta["patch_size"])
        self.whole = SlidingWindow(net, None, *window[1:]) if whole and not self.tile_given else None

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Predictor:
        """Built from the inference keys shared by conf/predict.yaml, eval.yaml and serve.yaml."""
        return cls(config_ckpt(cfg), device=cfg.device, **config_options(cfg))

    def describe(self) -> str:
        """One log line: device, tiles, overlap, TTA, precision and why."""
        tile = f"tile {self.window.tile}"
        if self.whole is not None:
            mirrored = " mirrored" if self.window.valid else ""
            tile = f"whole images up to {WHOLE_IMAGE_PIXELS} pixels as one{mirrored} tile, else {tile}"
        models = f"ensemble of {len(self.members)} models, " if len(self.members) > 1 else ""
        return (f"{models}{self.device}, {tile}, overlap {self.window.overlap}, tta {len(self.window.tta)}x "
                f"({self.tta_reason}), precision {self.precision} ({self.precision_reason})")  # fmt: skip

    @property
    def class_names(self) -> list[str]:
        """Class names, index order."""
        return self.model.class_names

    def read(self, path: str | Path) -> np.ndarray:
        """Read an image file as training did: ``(H, W, C)`` uint8, or float32 in [0, 1] for 16-bit/float."""
        return read_image(Path(path), self.color_mode, self.intensity)

    def decode(self, data: bytes, name: str = "upload") -> np.ndarray:
        """:meth:`read` for an encoded image held in memory (an HTTP upload); nothing is written to disk."""
        return read_image_bytes(data, name, self.color_mode, self.intensity)

    def to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """``(H, W, C)`` image as :meth:`read` gives it -> normalised ``(C, H, W)`` float32 tensor."""
        if image.ndim == 2:
            image = image[..., None]
        if image.shape[2] != self.in_channels:
            raise ValueError(f"image has {image.shape[2]} channels but the model takes {self.in_channels}")
        if image.dtype != np.uint8:
            image = image.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(self.normalize(image=image)["image"])).permute(2, 0, 1)

    def _window(self, hw: tuple[int, int]) -> SlidingWindow:
        whole = self.whole is not None and hw[0] * hw[1] <= WHOLE_IMAGE_PIXELS
        return self.whole if whole else self.window

    def logits(self, image: np.ndarray) -> torch.Tensor:
        """``(K, H, W)`` float32 logits for an ``(H, W, C)`` image (see :meth:`read`); ``K = 2`` for a binary
        (one sigmoid channel) model, as :func:`segkit.metrics.two_class_logits` reads it."""
        return two_class_logits(self._window(image.shape[:2])(self.to_tensor(image))[None])[0]

    def logits_many(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """:meth:`logits` of several images; images of one size share forward passes (a server's batch)."""
        out: list[torch.Tensor | None] = [None] * len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(tuple(image.shape[:2]), []).append(i)
        for hw, indices in by_size.items():
            batch = self._window(hw).many([self.to_tensor(images[i]) for i in indices])
            for i, logits in zip(indices, batch, strict=True):
                out[i] = two_class_logits(logits[None])[0]
        return out

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """``(K, H, W)`` float32 class probabilities."""
        return self.logits(image).softmax(dim=0).numpy()

    def predict(self, image: np.ndarray) -> np.ndarray:
        """``(H, W)`` uint8 class indices."""
        return class_indices(self.logits(image))


def config_ckpt(cfg: DictConfig) -> str | list[str]:
    """``cfg.ckpt``: one path, or a list of them (an ensemble)."""
    return cfg.ckpt if isinstance(cfg.ckpt, str) else [str(c) for c in cfg.ckpt]


def config_options(cfg: DictConfig) -> dict:
    """The :class:`Predictor` arguments besides model and device, from the shared inference keys
    (conf/inference/default.yaml) and the precision group, when one was chosen."""
    precision = OmegaConf.select(cfg, "trainer.precision")
    tile = cfg.get("tile")
    tile = OmegaConf.to_object(tile) if OmegaConf.is_config(tile) else tile  # checked by the Predictor
    return {"tile": tile, "overlap": cfg.overlap, "tta": cfg.get("tta"),
            "precision": precision_name(precision) if precision else None,
            "tile_batch_size": cfg.tile_batch_size}  # fmt: skip


def members(model: LoadedModel | str | Path | Sequence[LoadedModel | str | Path]) -> list[LoadedModel]:
    """The loaded model(s) ``model`` names, checked to be averageable when there are several."""
    if isinstance(model, LoadedModel):
        return [model]
    paths = member_paths(model) if isinstance(model, str | Path) else model  # a multirun directory: its runs
    models = [m if isinstance(m, LoadedModel) else load_model(m) for m in paths]
    check_members(models)
    return models


def class_indices(logits: torch.Tensor, rows: int = 512) -> np.ndarray:
    """``(K, H, W)`` logits -> ``(H, W)`` uint8 argmax, a band of rows at a time (argmax alone would make an
    int64 image, 8 bytes a pixel)."""
    out = np.empty(logits.shape[1:], dtype=np.uint8)
    for top in range(0, logits.shape[1], rows):
        out[top : top + rows] = logits[:, top : top + rows].argmax(dim=0).numpy()
    return out
