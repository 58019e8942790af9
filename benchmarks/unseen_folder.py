"""segkit on a folder nobody tuned for: plain defaults, an expert's overrides and ``+experiment=auto``.

    python benchmarks/unseen_folder.py --minutes 5 --seeds 42 7 3

Issue 21's held-out folder is variable-size RGBA microscopy (48 train / 11 val images, 256² to 1040x1388,
masks 0/255) that this machine never sees. This script writes a stand-in of the same shape (a procedural
nuclei set in the style of the 2018 Data Science Bowl: mostly fluorescence, some bright-field and
H&E-like images, nuclei of a size and density drawn per image) to ``--folder`` and trains three sides on it,
one after the other, with the same budget and seed:

- ``defaults``: the README's command with the data and the budget only (``trainer.max_epochs=100000``);
- ``expert``: the overrides issue 21 quotes (epoch length 240, validation every 4 epochs, poly, bf16,
  channels-last);
- ``auto``: ``+experiment=auto`` with the data and the budget only (it reads the 0/255 masks itself);
- on request, to see what the plan's rare-class rules add where the foreground is rare:
  ``auto_no_class_weights`` (the plan, class weights typed off) and ``auto_no_rare_rules`` (class weights off
  and cosine instead of poly); and ``auto_per_image``, the plan with each image z-scored by its own
  statistics (``data.normalization=image``, nnU-Net's scheme for non-CT images):

    python benchmarks/unseen_folder.py --folder outputs/unseen_nuclei_rare --coverage 0.005 0.025 \
        --sides expert auto auto_no_class_weights --minutes 5 --seeds 42 7 3

Overrides after ``--`` go to every side (``-- task.optimizer.lr=0.003``: a lever typed over the plan).

``--draw N`` writes another folder of the same kind (``--folder outputs/unseen_nuclei_rare_s1 --draw 1``): a
split to check a rule on that it was not chosen on. ``--grey`` writes the same draw as 8-bit grey images (what
a single-channel microscope folder looks like to the plan).

Each side's final weights (``last.ckpt``) are scored by ``python -m segkit.eval`` with its defaults on the
11 validation images: pooled foreground IoU and the mean of the per-image foreground IoU, the issue's two
figures. One rule was chosen on the rare folder (``decide_norm``, checked against BatchNorm on ``--draw 1``);
the rest of segkit was not chosen on this data. It is a stand-in for the shape of the held-out folder,
not for its content.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from budget_runs import eval_last, mean_std, run_experiment  # noqa: E402

# (H, W) and how often the 2018 Data Science Bowl's training images have it, roughly
SIZES = [((256, 256), 0.45), ((256, 320), 0.15), ((360, 360), 0.13), ((520, 696), 0.15), ((512, 640), 0.05),
         ((1024, 1024), 0.04), ((1040, 1388), 0.03)]  # fmt: skip
COVERAGE = (0.05, 0.3)  # share of an image its nuclei cover, drawn per image; (0.005, 0.025): a rare foreground
DEFAULTS = ["data=folder", "data.train_dataset.mask_threshold=127", "trainer.max_epochs=100000"]  # 255: foreground
EXPERT = (
    "data.samples_per_epoch=240 trainer.check_val_every_n_epoch=4 scheduler=poly trainer=cpu task.channels_last=true"
)
SIDES = {
    "defaults": (None, DEFAULTS),
    "expert": (None, [*DEFAULTS, *EXPERT.split()]),
    "auto": ("auto", ["data=folder"]),
    "auto_no_rare_rules": ("auto", ["data=folder", "task.loss.class_weights=null", "scheduler=cosine"]),
    "auto_no_class_weights": ("auto", ["data=folder", "task.loss.class_weights=null"]),
    "auto_per_image": ("auto", ["data=folder", "data.normalization=image"]),
}


def blobs(shape: tuple[int, int], centres: np.ndarray, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Irregular ellipses around ``centres`` ((N, 2) y, x): a float map holding each blob's brightness (0 outside)."""
    h, w = shape
    out = np.zeros(shape, dtype=np.float32)
    for cy, cx in centres:
        a = radius * rng.uniform(0.7, 1.3)
        b = a * rng.uniform(0.55, 1.0)
        angle = rng.uniform(0, math.pi)
        r = int(a * 1.3) + 2
        y0, y1, x0, x1 = max(0, int(cy) - r), min(h, int(cy) + r), max(0, int(cx) - r), min(w, int(cx) + r)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = yy - cy, xx - cx
        u = dx * math.cos(angle) + dy * math.sin(angle)
        v = -dx * math.sin(angle) + dy * math.cos(angle)
        theta = np.arctan2(v, u)
        edge = 1 + 0.08 * np.sin(3 * theta + rng.uniform(0, 6.3)) + 0.05 * np.sin(5 * theta + rng.uniform(0, 6.3))
        inside = (u / a) ** 2 + (v / b) ** 2 <= edge**2
        out[y0:y1, x0:x1][inside] = rng.uniform(0.15, 1.0)
    return out


def centres(shape: tuple[int, int], count: int, rng: np.random.Generator) -> np.ndarray:
    """Points in clusters (touching nuclei) and alone, ``(count, 2)``."""
    h, w = shape
    spread = rng.uniform(0.02, 0.15) * min(h, w)
    heads = rng.uniform((0, 0), (h, w), (max(1, count // 8), 2))
    clustered = heads[rng.integers(0, len(heads), count)] + rng.normal(0, spread, (count, 2))
    alone = rng.uniform((0, 0), (h, w), (count, 2))
    return np.where(rng.random((count, 1)) < 0.5, clustered, alone)


def nuclei_image(
    size: tuple[int, int], rng: np.random.Generator, coverage: tuple[float, float] = COVERAGE
) -> tuple[np.ndarray, np.ndarray]:
    """One RGBA image and its 0/255 mask, nuclei covering a share of it drawn from ``coverage``. What makes it
    hard is what makes real nuclei images hard: dim nuclei at low signal to noise, uneven illumination, blur,
    clusters of touching nuclei, and things that look like nuclei but are not annotated (out-of-focus nuclei,
    debris, cytoplasm)."""
    h, w = size
    radius = rng.uniform(5, 16) * (1.0 if h * w < 600_000 else 0.7)
    count = max(1, int(rng.uniform(*coverage) * h * w / (math.pi * radius**2 * 0.8)))
    nuclei = blobs(size, centres(size, count, rng), radius, rng)
    mask = nuclei > 0
    ghosts = ndimage.gaussian_filter(blobs(size, centres(size, count // 3, rng), radius, rng), radius / 2) * 0.6
    debris = blobs(size, rng.uniform((0, 0), (h, w), (count // 2, 2)), rng.uniform(1.5, 3.5), rng)
    cytoplasm = ndimage.gaussian_filter(blobs(size, centres(size, count // 2, rng), radius * 2.2, rng), 2) * 0.3
    chromatin = ndimage.gaussian_filter(rng.normal(0, 1, size).astype(np.float32), rng.uniform(0.8, 2.0))
    signal = nuclei * (1 + 0.35 * chromatin) + ghosts + debris * rng.uniform(0.3, 1.0) + cytoplasm
    signal = ndimage.gaussian_filter(signal, rng.uniform(0.6, 2.5))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    light = 1 + rng.uniform(0, 0.5) * np.cos(2 * math.pi * (yy / h * rng.uniform(0, 1) + xx / w * rng.uniform(0, 1)))
    kind = rng.choice(["fluorescence", "brightfield", "stained"], p=[0.75, 0.15, 0.10])
    if kind == "fluorescence":
        tint = np.ones(3) if rng.random() < 0.7 else rng.uniform(0.2, 1.0, 3)
        rgb = (rng.uniform(2, 30) + signal * rng.uniform(40, 230))[..., None] * light[..., None] * tint
    elif kind == "brightfield":
        paper = rng.uniform(150, 225)
        rgb = ((paper - signal * rng.uniform(25, 110)) * light)[..., None] * np.ones(3)
    else:
        paper, ink = np.array([232, 185, 210]), np.array([95, 55, 150])
        weight = np.clip(signal, 0, 1)[..., None]
        rgb = (paper * (1 - weight) + ink * weight) * light[..., None]
    rgb = rgb + rng.normal(0, rng.uniform(2, 14), (h, w, 1))
    rgba = np.concatenate([np.clip(rgb, 0, 255), np.full((h, w, 1), 255.0)], axis=-1).astype(np.uint8)
    return rgba, mask.astype(np.uint8) * 255


def write_folder(
    root: Path,
    train: int = 48,
    val: int = 11,
    seed: int = 0,
    coverage: tuple[float, float] = COVERAGE,
    grey: bool = False,
) -> None:
    """``root/{train,val}/{images,masks}/*.png``, RGBA or (``grey``) 8-bit grey; the first image of each split
    is one of the two largest sizes."""
    rng = np.random.default_rng(seed)
    sizes, weights = zip(*SIZES, strict=True)
    for split, n, first in (("train", train, SIZES[-1][0]), ("val", val, SIZES[-2][0])):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            size = first if i == 0 else sizes[rng.choice(len(sizes), p=np.asarray(weights) / sum(weights))]
            image, mask = nuclei_image(size, rng, coverage)
            picture = Image.fromarray(image, "RGBA")
            (picture.convert("L") if grey else picture).save(root / split / "images" / f"{split}_{i:03d}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{split}_{i:03d}.png")
    print(f"wrote {train} training and {val} validation images to {root}", flush=True)


def score(run_dir: Path) -> dict:
    """``segkit.eval`` of the run's last.ckpt with its defaults: pooled and mean per-image foreground IoU."""
    output = eval_last(run_dir)
    scores = json.loads((output / "eval.json").read_text())
    with open(output / "per_image.csv") as f:
        rows = list(csv.DictReader(f))
    foreground = [k for k in rows[0] if k.startswith("iou_")][1]  # the columns follow the class order
    per_image = [float(r[foreground]) for r in rows]
    return {"pooled_iou": float(scores[f"val/{foreground}"]), "image_iou": float(np.nanmean(per_image))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 3])
    parser.add_argument("--sides", nargs="+", choices=sorted(SIDES), default=["defaults", "expert", "auto"])
    parser.add_argument("--folder", type=Path, default=Path("outputs/unseen_nuclei"))
    parser.add_argument("--coverage", type=float, nargs=2, default=list(COVERAGE),
                        help="share of each image the nuclei cover, drawn from this range")  # fmt: skip
    parser.add_argument("--draw", type=int, default=0, help="seed of the folder's random draw (a new folder)")
    parser.add_argument("--grey", action="store_true", help="write the folder's images as 8-bit grey")
    parser.add_argument("overrides", nargs="*", help="overrides for every side (after --), e.g. a lever to screen")
    args = parser.parse_args()
    folder = args.folder.resolve()
    if not (folder / "val" / "masks").is_dir():
        write_folder(folder, seed=args.draw, coverage=tuple(args.coverage), grey=args.grey)
    results: dict[str, list[dict]] = {side: [] for side in args.sides}
    for seed in args.seeds:
        for side in args.sides:
            experiment, overrides = SIDES[side]
            print(f"[{side}] seed {seed}, {args.minutes:g} min", flush=True)
            _, steps, run_dir = run_experiment(
                experiment, folder, args.minutes, [*overrides, *args.overrides, f"seed={seed}"], name=f"unseen_{side}"
            )
            row = score(run_dir) | {"steps": steps}
            results[side].append(row)
            print(f"  {run_dir}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)

    print(f"\nunseen nuclei folder, {args.minutes:g} min a run, seeds {args.seeds}, last.ckpt through segkit.eval")
    print("| side | pooled foreground IoU | mean per-image IoU | steps |\n|---|---|---|---|")
    for side, rows in results.items():
        pooled, image = (mean_std([r[key] for r in rows], 3) for key in ("pooled_iou", "image_iou"))
        print(f"| {side} | {pooled} | {image} | {np.mean([r['steps'] for r in rows]):.0f} |")


if __name__ == "__main__":
    main()
