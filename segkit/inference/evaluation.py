"""Scoring a model through the prediction path: the same reading, sliding window and precision users get.

:func:`evaluate` writes ``eval.json`` (pooled scores), ``per_image.csv`` (one row per image, the nnU-Net habit),
``confusion_matrix.png`` and a table on the console. ``segkit.eval`` and training's ``test_after_fit`` both use it."""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch.utils.data import Subset

from segkit.data.folds import fold_indices, holdout_indices, sample_strata
from segkit.inference.files import FileProgress, save_index_png
from segkit.inference.predictor import Predictor
from segkit.inference.report import Gallery, write_html_report
from segkit.metrics import ImageMetricMean, dice_per_class, iou_per_class, segmentation_scores, write_metrics
from segkit.visualize import save_confusion_matrix, save_overlay_with_legend

log = logging.getLogger(__name__)


def confusion(target: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int) -> torch.Tensor:
    """``(K, K)`` counts, rows = target, columns = prediction; ignored and out-of-range targets left out."""
    valid = (target != ignore_index) & (target >= 0) & (target < num_classes)
    index = target[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    return torch.from_numpy(np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes))


def evaluate(predictor: Predictor, samples: Sequence[dict], prefix: str, output: Path | None = None,
             report: bool = False, metric: str | None = None, save_predictions: bool = False) -> dict:  # fmt: skip
    """Score ``samples`` (dicts with a raw ``"image"`` (H, W, C) and ``"mask"`` (H, W), optional ``"name"``).

    ``samples`` is indexed one at a time (a dataset reads each file when asked), so a split of any size is
    streamed: only one decoded image and the per-image score rows are held.

    Returns ``{f"{prefix}/miou": ..., f"{prefix}/iou_<class>": ..., ...}`` from the confusion matrix pooled
    over all images (the numbers training logs), and, with ``output``, writes the files listed above; with
    ``report``, also ``report.html`` (:mod:`segkit.inference.report`), its gallery sorted worst first by
    ``metric`` (default ``{prefix}/miou``); with ``save_predictions``, each image's class-index PNG and overlay
    under ``predictions/``, linked from the report.
    """
    meta = predictor.model.metadata
    names, k, ignore = predictor.class_names, int(meta["num_classes"]), int(meta.get("ignore_index", 255))
    total = torch.zeros(k, k, dtype=torch.int64)
    # the per-image scores training logged for this model (ISBI's adapted Rand error, HD95), computed alike
    image_metrics = {
        name: ImageMetricMean(name, int(meta.get("foreground_class", 1)), ignore)
        for name in meta.get("image_metrics", [])
    }
    rows = []
    gallery = Gallery(np.asarray(meta["palette"], dtype=np.float32) / 255.0, ignore) if report else None
    saved = output / "predictions" if output is not None and save_predictions else None
    if saved is not None:
        saved.mkdir(parents=True, exist_ok=True)
    progress = FileProgress(len(samples))
    for i in range(1, len(samples) + 1):
        sample = samples[i - 1]
        image = np.asarray(sample["image"])
        target = np.asarray(sample["mask"])
        pred = predictor.predict(image)
        cm = confusion(target, pred, k, ignore)
        total += cm
        name = str(sample.get("name", i - 1))
        row = {"image": name, "pixels": int(cm.sum())}
        iou = iou_per_class(cm)
        row["miou"] = float(iou.nanmean()) if not iou.isnan().all() else float("nan")
        row.update({f"iou_{c}": v for c, v in zip(names, iou.tolist(), strict=True)})
        row.update({f"dice_{c}": v for c, v in zip(names, dice_per_class(cm).tolist(), strict=True)})
        row["pixel_error"] = 1.0 - float(cm.diag().sum()) / max(int(cm.sum()), 1)
        for metric_name, image_metric in image_metrics.items():
            row[metric_name] = image_metric.image_score(pred, target)
        rows.append(row)
        link = None
        if saved is not None:
            stem = name.replace("/", "_").replace("\\", "_")
            save_index_png(pred, meta["palette"], saved / f"{stem}.png")
            save_overlay_with_legend(image, pred, names, meta["palette"], saved / f"{stem}_overlay.png")
            link = f"predictions/{stem}_overlay.png"
        if gallery is not None:
            gallery.add(name, image, target, pred, link)
        progress.update(i, name)
    progress.close()
    scores = segmentation_scores(total, names, prefix)
    for name in image_metrics:  # mean over the images, as in training
        values = [row[name] for row in rows if not np.isnan(row[name])]
        scores[f"{prefix}/{name}"] = float(np.mean(values)) if values else float("nan")
    if output is not None:
        write_report(scores, rows, total, names, output, prefix)
        if gallery is not None:
            title = f"{predictor.model.source}: {prefix}, {len(rows)} images"
            path = write_html_report(output / "report.html", title, scores, rows, total.numpy(), names, gallery,
                                     metric or f"{prefix}/miou", prefix)  # fmt: skip
            log.info("Report: %s", path)
    return scores


def write_report(scores: dict, rows: list[dict], confmat: torch.Tensor, names: list[str], output: Path,
                 prefix: str) -> None:  # fmt: skip
    """``eval.json``, ``per_image.csv``, ``confusion_matrix.png`` and the console table."""
    output.mkdir(parents=True, exist_ok=True)
    with open(output / "per_image.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    save_confusion_matrix(confmat.numpy(), names, output / "confusion_matrix.png", title=f"{prefix}, pooled")
    write_metrics(scores, output / "eval.json", f"{prefix}: {len(rows)} images")


def split_samples(data_cfg: DictConfig, split: str) -> Sequence[dict]:
    """The raw samples (no augmentation, no normalisation) of a data config's ``train``, ``val`` or ``test``
    split, as a dataset that reads each file when indexed. ``train`` and ``val`` are what the run trained and
    validated on: with ``num_folds`` the folds, without a ``val_dataset`` the ``val_fraction`` held out of the
    training set and the rest."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"split={split}: give split=val, test or train")
    if split != "test" and (data_cfg.get("num_folds") or data_cfg.get("val_dataset") is None):
        train = instantiate(data_cfg.train_dataset)(transform=None)
        seed = int(data_cfg.get("split_seed", 0))
        if data_cfg.get("num_folds"):
            parts = fold_indices(sample_strata(train), int(data_cfg.num_folds), int(data_cfg.fold), seed)
        else:
            parts = holdout_indices(len(train), float(data_cfg.get("val_fraction", 0.2)), seed)
        return Subset(train, parts[split == "val"])
    node = data_cfg.get(f"{split}_dataset")
    if node is None:
        raise ValueError(f"the data config has no {split}_dataset: give one (data.{split}_dataset=...) or split=val")
    return instantiate(node)(transform=None)
