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


ERROR_COLOUR = (1.0, 0.0, 0.0)
IGNORED_COLOUR = (1.0, 0.85, 0.0)


def _save(fig: Figure, path: str | Path, tight: bool = True) -> Path:
    """Write ``fig`` as a PNG (creating folders)."""
    if tight:
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
    alpha: float = 0.6,
    colours: np.ndarray | None = None,
) -> np.ndarray:
    """Class colours (default :func:`palette`) over ``image`` ``(H, W, 3)`` in 0..1; background and ignored
    pixels stay as they are. Under a colour the image is shown in grey, so the colour reads as the legend's
    (a red class over a blue object stays red, not purple)."""
    colours = palette(num_classes) if colours is None else colours
    out = image.copy()
    labelled = (mask > 0) & (mask != ignore_index) & (mask < num_classes)
    grey = image[labelled].mean(axis=-1, keepdims=True)
    out[labelled] = (1 - alpha) * grey + alpha * colours[mask[labelled]]
    return out


def error_map(image: np.ndarray, target: np.ndarray, pred: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """``image`` dimmed to grey with the wrongly predicted pixels in red and ignored pixels in yellow:
    where the mistakes are, at a glance."""
    grey = image.mean(axis=-1, keepdims=True)
    out = np.repeat(0.25 + 0.4 * grey, 3, axis=-1)
    out[(pred != target) & (target != ignore_index)] = ERROR_COLOUR
    out[target == ignore_index] = IGNORED_COLOUR
    return out


def upscale(image: np.ndarray, min_side: int = 256) -> np.ndarray:
    """``image`` repeated by the smallest integer factor that makes its shorter side at least ``min_side``
    (nearest neighbour: pixels stay sharp squares); large images are returned as they are."""
    factor = -(-min_side // max(1, min(image.shape[:2])))
    return image if factor <= 1 else image.repeat(factor, axis=0).repeat(factor, axis=1)


def save_overlay_with_legend(
    image: np.ndarray, mask: np.ndarray, class_names: Sequence[str], colours: Sequence[Sequence[int]], path: Path
) -> Path:
    """``image`` (uint8, or float in 0..1; grey or RGB) with class colours blended in, at full size (PIL, not
    matplotlib: an 8000x8000 mask stays cheap; images under 256 px are enlarged so the picture is not smaller
    than its legend), and a legend strip below."""
    from PIL import Image, ImageDraw

    rgb = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
    rgb = np.repeat(rgb, 3, axis=2) if rgb.shape[2] == 1 else rgb[..., :3]
    rgb = upscale(overlay(rgb, mask, len(class_names), colours=np.asarray(colours, dtype=np.float32) / 255.0))
    h, w = rgb.shape[:2]
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


def legend_handles(class_names: Sequence[str], colours: np.ndarray, errors: bool = True) -> list:
    """Legend patches: each class but the background (left uncoloured), then the error view's colours."""
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=colours[k], edgecolor="black", label=name) for k, name in enumerate(class_names)][1:]
    if errors:
        handles += [Patch(facecolor=ERROR_COLOUR, label="error"), Patch(facecolor=IGNORED_COLOUR, label="ignored")]
    return handles


def save_prediction_grid(
    images: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    predictions: Sequence[np.ndarray],
    path: str | Path,
    num_classes: int,
    ignore_index: int = 255,
    title: str = "",
    class_names: Sequence[str] | None = None,
) -> Path:
    """One row per sample: image | ground truth | prediction | errors, a class legend below, each row titled
    with its pixel accuracy. Returns the written path."""
    names = list(class_names) if class_names is not None else [f"class {k}" for k in range(num_classes)]
    colours = palette(num_classes)
    rows = len(images)
    height = 3.2 * rows + 1.3  # 0.8 in above for the title and the panel names, 0.5 in below for the legend
    fig = Figure(figsize=(12, height))
    margins = {"left": 0.01, "right": 0.99, "top": 1 - 0.8 / height, "bottom": 0.5 / height, "hspace": 0.15}
    axes = fig.subplots(rows, 4, squeeze=False, gridspec_kw={**margins, "wspace": 0.05})
    for row, (image, target, pred) in enumerate(zip(images, targets, predictions, strict=True)):
        h, w = pred.shape
        if image.shape[:2] != (h, w):  # valid-padding models predict the centre only
            top, left = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
            image = image[top : top + h, left : left + w]
            target = target[top : top + h, left : left + w]
        valid = target != ignore_index
        accuracy = float((pred == target)[valid].mean()) if valid.any() else float("nan")
        panels = {
            "image": image,
            "ground truth": overlay(image, target, num_classes, ignore_index, colours=colours),
            "prediction": overlay(image, pred, num_classes, ignore_index, colours=colours),
            f"errors ({1 - accuracy:.1%} of pixels)": error_map(image, target, pred, ignore_index),
        }
        for ax, (name, panel) in zip(axes[row], panels.items(), strict=True):
            ax.imshow(panel, interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(name, fontsize=9)
    fig.legend(handles=legend_handles(names, colours), loc="lower center", ncol=min(8, num_classes + 1),
               fontsize=9, frameon=False)  # fmt: skip
    if title:
        fig.suptitle(title)
    return _save(fig, path, tight=False)


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


def row_shares(confmat: np.ndarray) -> np.ndarray:
    """Each row of a confusion matrix (rows = true class) as shares of its sum; an empty row stays 0."""
    counts = np.asarray(confmat, dtype=np.float64)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def save_confusion_matrix(confmat: np.ndarray, class_names: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Heat map of a confusion matrix (rows = true class, columns = predicted), each row normalised to the share
    of its true class's pixels (so a small class's diagonal is as readable as the background's), with a colour
    bar, and the share and the raw count written in each cell."""
    n = len(class_names)
    counts, shares = np.asarray(confmat), row_shares(confmat)
    fig = Figure(figsize=(3.5 + 0.9 * n, 2.2 + 0.8 * n))
    ax = fig.subplots()
    shown = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(shown, ax=ax, label="share of the true class", fraction=0.046, pad=0.04)
    ax.set_xticks(range(n), class_names, rotation=45, ha="right")
    ax.set_yticks(range(n), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    size = 8 if n <= 8 else 6
    for i in range(n):
        for j in range(n):
            colour = "white" if shares[i, j] > 0.5 else "black"
            ax.text(j, i, f"{shares[i, j]:.0%}\n{int(counts[i, j]):,}", ha="center", va="center", color=colour,
                    fontsize=size)  # fmt: skip
    if title:
        ax.set_title(title)
    return _save(fig, path)
