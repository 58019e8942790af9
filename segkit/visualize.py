"""Pictures of results: prediction overlays and training curves, saved as PNG files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

# Figures are built with matplotlib's object API (``Figure``, not ``pyplot``): no global backend switch, so
# importing segkit in a notebook leaves its inline backend alone, and no figure is kept in pyplot's registry.


def _save(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG (creating folders)."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    return path


def palette(num_classes: int) -> np.ndarray:
    """``(num_classes, 3)`` float RGB colours: black background, then tab10/tab20 colours."""
    cmap = colormaps["tab10" if num_classes <= 11 else "tab20"]
    colours = [(0.0, 0.0, 0.0)] + [cmap(i % cmap.N)[:3] for i in range(num_classes - 1)]
    return np.asarray(colours, dtype=np.float32)


def denormalize(image: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised ``(C, H, W)`` tensor -> ``(H, W, 3)`` float RGB in 0..1 (grey images are repeated)."""
    mean_t = torch.as_tensor(mean, dtype=image.dtype).view(-1, 1, 1)
    std_t = torch.as_tensor(std, dtype=image.dtype).view(-1, 1, 1)
    array = (image.float().cpu() * std_t + mean_t).clamp(0, 1).permute(1, 2, 0).numpy()
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array[..., :3]


def overlay(
    image: np.ndarray,
    mask: np.ndarray,
    num_classes: int,
    ignore_index: int = 255,
    alpha: float = 0.5,
    colours: np.ndarray | None = None,
) -> np.ndarray:
    """Blend class colours (default :func:`palette`) over ``image`` ``(H, W, 3)`` in 0..1; background and
    ignored pixels stay as they are."""
    colours = palette(num_classes) if colours is None else colours
    out = image.copy()
    labelled = (mask > 0) & (mask != ignore_index) & (mask < num_classes)
    out[labelled] = (1 - alpha) * image[labelled] + alpha * colours[mask[labelled]]
    return out


def save_overlay_with_legend(
    image: np.ndarray, mask: np.ndarray, class_names: Sequence[str], colours: Sequence[Sequence[int]], path: Path
) -> Path:
    """``image`` (uint8, or float in 0..1; grey or RGB) with class colours blended in, at full size (PIL, not
    matplotlib: an 8000x8000 mask stays cheap), and a legend strip below."""
    from PIL import Image, ImageDraw

    rgb = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
    rgb = np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb[..., :3]
    rgb = overlay(rgb, mask, len(class_names), colours=np.asarray(colours, dtype=np.float32) / 255.0)
    h, w = mask.shape
    row = 16
    canvas = Image.new("RGB", (max(w, 160), h + row * len(class_names) + 4), "white")
    canvas.paste(Image.fromarray((rgb * 255).round().astype(np.uint8)), (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, name in enumerate(class_names):
        top = h + 2 + k * row
        draw.rectangle((4, top + 2, 16, top + 13), fill=tuple(colours[k]), outline="black")
        draw.text((22, top + 1), f"{k}: {name}" + (" (not coloured)" if k == 0 else ""), fill="black")
    canvas.save(path)
    return Path(path)


def save_prediction_grid(
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    path: str | Path,
    num_classes: int,
    ignore_index: int = 255,
    title: str = "",
) -> Path:
    """One row per sample: image | ground truth overlay | prediction overlay. Returns the written path."""
    rows = len(images)
    fig = Figure(figsize=(9, 3 * rows))
    axes = fig.subplots(rows, 3, squeeze=False)
    for row, (image, target, pred) in enumerate(zip(images, targets, predictions, strict=True)):
        h, w = pred.shape
        if image.shape[:2] != (h, w):  # valid-padding models predict the centre only
            top, left = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
            image = image[top : top + h, left : left + w]
            target = target[top : top + h, left : left + w]
        panels = (
            image,
            overlay(image, target, num_classes, ignore_index),
            overlay(image, pred, num_classes, ignore_index),
        )
        for ax, panel, name in zip(axes[row], panels, ("image", "ground truth", "prediction"), strict=True):
            ax.imshow(panel)
            ax.set_axis_off()
            if row == 0:
                ax.set_title(name)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def save_curves(history: Mapping[str, Sequence[tuple[int, float]]], path: str | Path) -> Path:
    """Plot each metric's ``(epoch, value)`` series; losses on the left axis, scores on the right."""
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_score = fig.subplots(1, 2)
    for name, points in history.items():
        if not points:
            continue
        epochs, values = zip(*points, strict=True)
        ax = ax_loss if "loss" in name.rsplit("/", 1)[-1] else ax_score  # train/loss_epoch, val/loss, ...
        ax.plot(epochs, values, marker="o", label=name)
    for ax, title in ((ax_loss, "loss"), (ax_score, "scores")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    return _save(fig, path)


def save_confusion_matrix(confmat: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Heat map of a confusion matrix (rows = true class, columns = predicted) with the counts written in."""
    n = len(class_names)
    fig = Figure(figsize=(2.5 + 0.7 * n, 2.2 + 0.7 * n))
    ax = fig.subplots()
    ax.imshow(confmat, cmap="Blues")
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    top = confmat.max() if confmat.size else 0
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                int(confmat[i, j]),
                ha="center",
                va="center",
                color="white" if confmat[i, j] > top / 2 else "black",
            )
    if title:
        ax.set_title(title)
    return _save(fig, path)
