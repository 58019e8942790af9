"""ISBI 2012 in a fixed wall-time budget: a strong plain-PyTorch peer against segkit's recipe, back to back.

    NO_ALBUMENTATIONS_UPDATE=1 python benchmarks/isbi2012_vs_peer.py --minutes 5 --ours-minutes 5 --seeds 42 7 3
        [--peer-precision bf16|fp32] [--skip-peer] [--data-dir ../shared/data] [-- extra segkit overrides]

The peer is what a careful user writes by hand: ``smp.Unet("resnet34", encoder_weights=None, in_channels=1,
classes=1)``, random 256x256 crops with flips and 90-degree rotations, batch 4, Adam 1e-3 with polynomial
decay over the time budget, BCE + Dice, trained on slices 0-23. segkit runs ``+experiment=isbi2012`` with
``trainer.max_time`` set, through its command line. Both are scored on the full 512x512 slices 24-29 with
the same definitions (membrane = foreground), both on their **final** weights (segkit's ``metrics.json``
``val/*``; its best-by-validation checkpoint is not used), for each seed in turn, then mean and spread:

- pixel error: mean over the slices of the share of wrong pixels;
- membrane IoU: pooled over all pixels of the six slices;
- adapted Rand error: ``segkit.metrics.adapted_rand_error`` (skimage's, on 4-connected cells),
  averaged over the slices.

The runs go one after the other, never at once (two torch runs on one machine slow each other down).
What differs between the sides: the network (smp U-Net-ResNet-34, 24.4 M parameters, against segkit's
1.9 M-parameter plain U-Net), the loss (BCE + Dice against nnU-Net's Dice + CE), the augmentation (flips and
rotations against those plus elastic deformation) and segkit's in-training validations (part of its budget).
Slices 24-29 were also looked at when segkit's recipe was chosen, so they are not a clean test split for it.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import torch
from budget_runs import mean_std, parse_args, run_experiment, seeds_in_turn, train_peer_for
from PIL import Image

from segkit.metrics.per_image import adapted_rand_error

VAL = [24, 25, 26, 27, 28, 29]


def load_slices(root: Path, stems: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Images in [0, 1] ``(N, 512, 512)`` float32 and membrane masks ``(N, 512, 512)`` bool."""
    images = np.stack([np.asarray(Image.open(root / "images" / f"{s}.png").convert("L")) for s in stems])
    masks = np.stack([np.asarray(Image.open(root / "masks" / f"{s}.png").convert("L")) for s in stems])
    return images.astype(np.float32) / 255.0, masks < 128  # membranes are black in the label images


def score(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The three ISBI figures for boolean membrane maps ``(N, H, W)``."""
    pixel_error = float(np.mean([(p != t).mean() for p, t in zip(pred, truth, strict=True)]))
    iou = float((pred & truth).sum() / max((pred | truth).sum(), 1))
    rand = float(np.mean([adapted_rand_error(t, p) for p, t in zip(pred, truth, strict=True)]))
    return {"pixel_error": pixel_error, "iou_membrane": iou, "adapted_rand_error": rand}


def random_batch(images: np.ndarray, masks: np.ndarray, rng: np.random.Generator, batch: int, crop: int):
    """Random crops with random flips and 90-degree rotations."""
    xs, ys = [], []
    for _ in range(batch):
        i = rng.integers(len(images))
        top, left = rng.integers(0, images.shape[1] - crop + 1), rng.integers(0, images.shape[2] - crop + 1)
        x, y = images[i, top : top + crop, left : left + crop], masks[i, top : top + crop, left : left + crop]
        k = rng.integers(4)
        x, y = np.rot90(x, k), np.rot90(y, k)
        if rng.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
        xs.append(x.copy())
        ys.append(y.copy())
    x = (torch.from_numpy(np.stack(xs))[:, None] - 0.5) / 0.25
    return x, torch.from_numpy(np.stack(ys))[:, None].float()


def run_peer(root: Path, seconds: float, precision: str, seed: int) -> dict[str, float]:
    """Train and score the peer within ``seconds`` of wall time (training only; scoring is after)."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images, masks = load_slices(root / "train", [i for i in range(30) if i not in VAL])
    net = smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=1)
    bf16 = precision == "bf16"
    if bf16:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    dice = smp.losses.DiceLoss("binary")

    def loss_of(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + dice(logits, y)

    steps = train_peer_for(net, optimizer, seconds, lambda: random_batch(images, masks, rng, 4, 256), loss_of, bf16)
    net.eval()
    val_images, val_masks = load_slices(root / "train", VAL)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = net((torch.from_numpy(val_images)[:, None] - 0.5) / 0.25).float()
    result = score(logits[:, 0].numpy() > 0, val_masks)
    result["steps"] = steps
    return result


def run_segkit(data_dir: Path, minutes: int, overrides: list[str], seed: int) -> dict[str, float]:
    """segkit's ``+experiment=isbi2012`` capped at ``minutes``: the final weights' three figures (metrics.json)."""
    metrics, steps, run_dir = run_experiment("isbi2012", data_dir, minutes, [f"seed={seed}", *overrides])
    keys = ("pixel_error", "iou_membrane", "adapted_rand_error")
    return {**{k: metrics[f"val/{k}"] for k in keys}, "steps": steps, "run": str(run_dir)}


def format_row(name: str, r: dict[str, float]) -> str:
    return (
        f"{name:40} {r['steps']:>6} {r['pixel_error']:>12.4f} {r['iou_membrane']:>13.4f} "
        f"{r['adapted_rand_error']:>13.4f}"
    )


def summary_row(name: str, results: list[dict[str, float]]) -> str:
    """Mean ± standard deviation over seeds."""
    cells = [mean_std([r[key] for r in results]) for key in ("pixel_error", "iou_membrane", "adapted_rand_error")]
    steps = np.mean([r["steps"] for r in results])
    return f"{name:40} {steps:>6.0f} " + " ".join(f"{c:>17}" for c in cells)


def main() -> None:
    args, data_dir = parse_args(
        __doc__, 5, [5], "isbi2012_em",
        lambda parser: (parser.add_argument("--peer-precision", choices=["bf16", "fp32"], default="bf16"),
                        parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 3])),
    )  # fmt: skip
    sides = {}
    if not args.skip_peer:
        sides[f"peer smp.Unet-R34 {args.peer_precision}, {args.minutes:g} min"] = lambda seed: run_peer(
            data_dir / "isbi2012_em", args.minutes * 60, args.peer_precision, seed
        )
    for minutes in args.ours_minutes:
        sides[f"segkit isbi2012, {minutes:g} min"] = partial(run_segkit, data_dir, minutes, args.overrides)
    rows, results = seeds_in_turn(args.seeds, sides, format_row)
    print(f"\n{'run (final weights)':40} {'steps':>6} {'pixel error':>12} {'membrane IoU':>13} {'adapted Rand':>13}")
    print("\n".join(rows))
    print(f"\n{'mean ± std over seeds ' + str(args.seeds):40} {'steps':>6} {'pixel error':>17} {'membrane IoU':>17} "
          f"{'adapted Rand':>17}")  # fmt: skip
    for name, runs in results.items():
        print(summary_row(name, runs))


if __name__ == "__main__":
    main()
