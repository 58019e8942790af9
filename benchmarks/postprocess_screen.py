"""Post-processing screened on trained runs: what removing small predicted objects, filling holes or moving
the foreground threshold would do to a binary folder's scores. No training: it rescores runs already made.

    python benchmarks/postprocess_screen.py outputs/benchmark_unseen_auto/<run> [<run> ...]

Each run's final weights (``checkpoints/last.ckpt``) predict its validation split through ``Predictor`` with
the run's defaults (the planned flips included), exactly as ``segkit.eval`` does; the foreground probability
is then cut at 0.5 (``segkit.eval``'s argmax, the baseline) and at 0.4 and 0.6, and the 0.5 cut is cleaned by
removing predicted objects (8-connected) under 16 or 32 px, or under a quarter or half of the training
objects' 10th-percentile area (``fingerprint.json``: a rule a plan could make without looking at validation),
or by filling holes (nnU-Net's habit is to keep only the largest object, which nuclei folders cannot use).
Prints pooled and mean per-image foreground IoU per run and each variant's mean gain over the baseline.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
from scipy import ndimage

from segkit.inference.evaluation import confusion, split_samples
from segkit.inference.predictor import Predictor
from segkit.metrics import iou_per_class
from segkit.quiet import silence_known_noise

EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def drop_small(foreground: np.ndarray, min_area: float) -> np.ndarray:
    """``foreground`` without its 8-connected objects of fewer than ``min_area`` pixels."""
    labels, count = ndimage.label(foreground, structure=EIGHT_CONNECTED)
    if count == 0:
        return foreground
    keep = np.bincount(labels.ravel()) >= min_area
    keep[0] = False
    return keep[labels]


def variants(object_p10: float) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Name -> foreground probability map to predicted foreground."""
    out = {"argmax (baseline)": lambda p: p > 0.5, "cut 0.4": lambda p: p > 0.4, "cut 0.6": lambda p: p > 0.6}
    for area in (16, 32):
        out[f"drop objects < {area} px"] = lambda p, a=area: drop_small(p > 0.5, a)
    for share in (0.25, 0.5):
        out[f"drop objects < {share} x p10 area"] = lambda p, s=share: drop_small(p > 0.5, s * object_p10)
    out["fill holes"] = lambda p: ndimage.binary_fill_holes(p > 0.5)
    return out


def score(run: Path) -> dict[str, tuple[float, float]]:
    """Variant -> (pooled, mean per-image) foreground IoU of ``run``'s final weights on its validation split."""
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    predictor = Predictor(str(run / "checkpoints" / "last.ckpt"), device="cpu")
    classes = json.loads((run / "fingerprint.json").read_text())["mask_values"]
    foreground_value = max(classes, key=lambda value: int(value))  # the binary folder's 255 (class 1)
    ignore = int(predictor.model.metadata.get("ignore_index", 255))
    images = []
    for sample in split_samples(cfg.data, "val"):
        probability = predictor.probabilities(np.asarray(sample["image"]))[1]
        images.append((probability, np.asarray(sample["mask"])))
    results = {}
    for name, predict in variants(classes[foreground_value]["object_area"]["p10"]).items():
        pooled = 0
        per_image = []
        for probability, target in images:  # segkit.eval's counting: one confusion matrix per image, summed
            cm = confusion(target, predict(probability).astype(np.uint8), 2, ignore)
            pooled = pooled + cm
            per_image.append(float(iou_per_class(cm)[1]))
        results[name] = (float(iou_per_class(pooled)[1]), float(np.nanmean(per_image)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path, nargs="+", help="run directories of a binary folder (0/255 masks)")
    args = parser.parse_args()
    silence_known_noise()
    gains: dict[str, list[float]] = {}
    for run in args.runs:
        results = score(run)
        base = results["argmax (baseline)"][0]
        print(f"\n{run}\n| variant | pooled IoU | per-image IoU |\n|---|---|---|", flush=True)
        for name, (pooled, image) in results.items():
            print(f"| {name} | {pooled:.4f} | {image:.4f} |")
            gains.setdefault(name, []).append(pooled - base)
    print(f"\nmean pooled gain over the baseline ({len(args.runs)} runs): min / mean / max")
    for name, values in gains.items():
        print(f"  {name:<32} {min(values):+.4f} / {np.mean(values):+.4f} / {max(values):+.4f}")


if __name__ == "__main__":
    main()
