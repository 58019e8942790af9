"""Prediction: ``python -m segkit.predict ckpt=<run | .ckpt | model dir> input=<file | folder | glob> output=<dir>``.

:class:`Predictor` is the Python API behind it (usable from a notebook): it reads images the way training
did (channels, intensity scaling, mean/std from the model's metadata), runs the sliding window and returns
class indices or probabilities. ``run(cfg)`` is the whole command, top to bottom.
"""

from __future__ import annotations

import glob
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from segkit.binary import two_class_logits
from segkit.data.datamodule import NormalizeAnyDepth
from segkit.data.intensity import IntensityNormalization
from segkit.data.io import IMAGE_SUFFIXES, read_image
from segkit.model_io import LoadedModel, load_model, precision_name
from segkit.sliding_window import SlidingWindow
from segkit.visualize import save_overlay_with_legend

log = logging.getLogger(__name__)

DEFAULT_TILE = (256, 256)
WHOLE_IMAGE_PIXELS = 1024 * 1024  # a valid-padding model predicts an image up to this size as one mirrored tile


def resolve_device(device: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} but no CUDA GPU is visible; use device=cpu or device=auto")
    return torch.device(device)


class Predictor:
    """Segments images of any size with a trained segkit model.

    Args:
        model: a :class:`segkit.LoadedModel` or a path :func:`segkit.load_model` accepts.
        tile: input tile ``(h, w)``; ``None``: the training crop (256x256 when the run had none), and for a
            valid-padding model the whole image as one mirrored tile when it has at most
            ``WHOLE_IMAGE_PIXELS`` pixels (what validation scored).
        overlap: share of a tile shared with its neighbours.
        tta: ``None``, ``"flips"`` or ``"d4"``.
        precision: ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast); ``None``: the precision the model was trained
            in (its metadata; fp32 when it does not say), so a model is run as it was trained.
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
        tile_batch_size: tiles per forward pass.
    """

    def __init__(
        self,
        model: LoadedModel | str | Path,
        tile: Sequence[int] | None = None,
        overlap: float = 0.5,
        tta: str | None = None,
        precision: str | None = None,
        device: str = "auto",
        tile_batch_size: int = 4,
    ) -> None:
        self.model = model if isinstance(model, LoadedModel) else load_model(model)
        meta = self.model.metadata
        if self.model.task != "segmentation":
            raise ValueError(f"{self.model.source} is a {self.model.task} model; predict segments images")
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
        self.normalize = NormalizeAnyDepth(meta["mean"], meta["std"])
        self.device = resolve_device(device)
        net = self.model.net.to(self.device).to(memory_format=torch.channels_last).eval()
        trained = meta.get("precision")
        self.precision = precision or trained or "fp32"
        self.precision_reason = (
            "as given"
            if precision
            else "as the model was trained"
            if trained
            else "the model does not say how it was trained"
        )
        self.tile_given = bool(tile)
        tile = tuple(tile) if tile else tuple(meta.get("patch_size") or DEFAULT_TILE)
        window = (net, overlap, 0.125, tile_batch_size, tta, self.device, self.precision)
        self.window = SlidingWindow(net, tile, *window[1:])
        self.whole = (
            None if self.tile_given or meta.get("padding") != "valid" else SlidingWindow(net, None, *window[1:])
        )

    @classmethod
    def from_config(cls, cfg: DictConfig) -> Predictor:
        """Built from the inference keys shared by conf/predict.yaml and conf/eval.yaml."""
        precision = OmegaConf.select(cfg, "trainer.precision")  # the precision group, when one was chosen
        return cls(
            cfg.ckpt, tile=cfg.get("tile"), overlap=cfg.overlap, tta=cfg.get("tta"),
            precision=precision_name(precision) if precision else None, device=cfg.device,
            tile_batch_size=cfg.tile_batch_size,
        )  # fmt: skip

    def describe(self) -> str:
        """One log line: device, tiles, overlap, TTA, precision and why."""
        tile = f"tile {self.window.tile}"
        if self.whole is not None:
            tile = f"whole images up to {WHOLE_IMAGE_PIXELS} pixels as one mirrored tile, else {tile}"
        return (f"{self.device}, {tile}, overlap {self.window.overlap}, tta {len(self.window.tta)}x, "
                f"precision {self.precision} ({self.precision_reason})")  # fmt: skip

    @property
    def class_names(self) -> list[str]:
        """Class names, index order."""
        return self.model.class_names

    def read(self, path: str | Path) -> np.ndarray:
        """Read an image file as training did: ``(H, W, C)`` uint8, or float32 in [0, 1] for 16-bit/float."""
        return read_image(Path(path), self.color_mode, self.intensity)

    def to_tensor(self, image: np.ndarray) -> torch.Tensor:
        """``(H, W, C)`` image as :meth:`read` gives it -> normalised ``(C, H, W)`` float32 tensor."""
        if image.ndim == 2:
            image = image[..., None]
        if image.shape[2] != self.in_channels:
            raise ValueError(f"image has {image.shape[2]} channels but the model takes {self.in_channels}")
        if image.dtype != np.uint8:
            image = image.astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(self.normalize(image=image)["image"])).permute(2, 0, 1)

    def logits(self, image: np.ndarray) -> torch.Tensor:
        """``(K, H, W)`` float32 logits for an ``(H, W, C)`` image (see :meth:`read`); ``K = 2`` for a binary
        (one sigmoid channel) model, as :func:`segkit.binary.two_class_logits` reads it."""
        window = (
            self.whole if self.whole is not None and image.shape[0] * image.shape[1] <= WHOLE_IMAGE_PIXELS else None
        )
        return two_class_logits((window or self.window)(self.to_tensor(image))[None])[0]

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        """``(K, H, W)`` float32 class probabilities."""
        return self.logits(image).softmax(dim=0).numpy()

    def predict(self, image: np.ndarray) -> np.ndarray:
        """``(H, W)`` uint8 class indices."""
        return class_indices(self.logits(image))


def class_indices(logits: torch.Tensor, rows: int = 512) -> np.ndarray:
    """``(K, H, W)`` logits -> ``(H, W)`` uint8 argmax, a band of rows at a time (argmax alone would make an
    int64 image, 8 bytes a pixel)."""
    out = np.empty(logits.shape[1:], dtype=np.uint8)
    for top in range(0, logits.shape[1], rows):
        out[top : top + rows] = logits[:, top : top + rows].argmax(dim=0).numpy()
    return out


def list_inputs(spec: str) -> list[Path]:
    """An image file, a folder (its image files, not recursive) or a glob pattern -> sorted files."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file())
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    if not files:
        raise FileNotFoundError(f"input={spec!r} matches no file")
    return files


def check_output_dir(output: Path, inputs: list[Path]) -> None:
    """Refuse an output folder that holds any input (written masks would replace or mix with the images)."""
    output = output.resolve()
    clashes = [p for p in inputs if p.resolve().parent == output]
    if clashes:
        raise ValueError(
            f"output={output} is the folder of the input images (e.g. {clashes[0].name}); "
            "choose another output folder so no input is overwritten"
        )


def output_stems(inputs: list[Path]) -> dict[Path, str]:
    """The name each input's outputs get: its stem, or ``<stem>_<suffix>`` where two inputs share a stem
    (``a.png`` and ``a.tif`` -> ``a_png``, ``a_tif``), so no output silently replaces another."""
    counts: dict[str, int] = {}
    for path in inputs:
        counts[path.stem] = counts.get(path.stem, 0) + 1
    stems = {p: p.stem if counts[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}" for p in inputs}
    if len(set(stems.values())) != len(inputs):  # a.png beside a.PNG, or a_png.png beside a.png and a.tif
        stems = {p: f"{i:05d}_{p.stem}" for i, p in enumerate(inputs)}
    for path in inputs:
        if stems[path] != path.stem:
            log.info("%s shares its stem with another input: its outputs are named %s*", path, stems[path])
    return stems


def save_index_png(mask: np.ndarray, palette: list[list[int]], path: Path) -> None:
    """A palette PNG: pixel values are class indices, viewers show the class colours."""
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    flat = [c for rgb in palette for c in rgb]
    image.putpalette(flat + [0] * (768 - len(flat)))
    image.save(path)


class FileProgress:
    """Progress over files: a rich bar in a terminal, else a log line at most every ``every_seconds``."""

    def __init__(self, total: int, every_seconds: float = 10.0) -> None:
        self.total, self.every_seconds = total, every_seconds
        self.start = self.last = time.monotonic()
        self.bar = None
        if sys.stdout.isatty():
            from rich.progress import Progress

            self.bar = Progress()
            self.bar.start()
            self.task = self.bar.add_task("predicting", total=total)

    def update(self, done: int, name: str) -> None:
        """Report that ``done`` files are finished, the last one ``name``."""
        if self.bar is not None:
            self.bar.update(self.task, completed=done)
            return
        now = time.monotonic()
        if now - self.last >= self.every_seconds or done in (1, self.total):
            self.last = now
            rate = done / (now - self.start)
            eta = (self.total - done) / rate if rate > 0 else 0.0
            log.info("[%d/%d] %s | %.2f images/s | ETA %.0f s", done, self.total, name, rate, eta)

    def close(self) -> None:
        """Stop the bar."""
        if self.bar is not None:
            self.bar.stop()


def run(cfg: DictConfig) -> dict:
    """Predict every input file; returns the summary (images, skipped, seconds, images/s)."""
    predictor = Predictor.from_config(cfg)
    inputs = list_inputs(str(cfg.input))
    output = Path(cfg.output)
    check_output_dir(output, inputs)
    output.mkdir(parents=True, exist_ok=True)
    meta = predictor.model.metadata
    log.info("Predicting %d file(s) with %s: %s", len(inputs), predictor.model.source, predictor.describe())
    stems = output_stems([p for p in inputs if p.suffix.lower() in IMAGE_SUFFIXES])
    progress, written, skipped = FileProgress(len(inputs)), 0, []
    start = time.monotonic()
    for i, path in enumerate(inputs, start=1):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((path, "not an image file"))
            continue
        try:
            image = predictor.read(path)
        except ValueError as err:  # corrupt or unreadable: name it, skip it, carry on
            log.warning("Skipping %s: %s", path, err)
            skipped.append((path, str(err)))
            continue
        logits = predictor.logits(image)
        mask = class_indices(logits)
        stem = stems[path]
        save_index_png(mask, meta["palette"], output / f"{stem}.png")
        if cfg.save_overlay:
            save_overlay_with_legend(image, mask, meta["class_names"], meta["palette"], output / f"{stem}_overlay.png")
        if cfg.save_probabilities:
            np.save(output / f"{stem}_probs.npy", logits.softmax(dim=0).numpy().astype(np.float16))
        written += 1
        progress.update(i, path.name)
    progress.close()
    seconds = time.monotonic() - start
    summary = {"images": written, "skipped": len(skipped), "seconds": round(seconds, 2),
               "images_per_second": round(written / seconds, 3) if seconds > 0 else 0.0}  # fmt: skip
    for path, why in skipped:
        log.warning("Skipped %s (%s)", path, why)
    log.info("Done: %d image(s) written to %s, %d skipped, %.1f s, %.2f images/s",
             written, output, len(skipped), seconds, summary["images_per_second"])  # fmt: skip
    return summary


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    """Command-line entry (conf/predict.yaml)."""
    run(cfg)


if __name__ == "__main__":
    main()
