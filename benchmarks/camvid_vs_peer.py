"""CamVid in a fixed wall-time budget: a plain-PyTorch smp peer against segkit's recipe, back to back.

    NO_ALBUMENTATIONS_UPDATE=1 python benchmarks/camvid_vs_peer.py --minutes 30 [--ours-minutes 30]
        [--seeds 42 7 3] [--skip-peer] [--data-dir ../shared/data] [-- extra segkit overrides]

The peer: ``smp.Unet("resnet34", encoder_weights=None, classes=11)`` from scratch, bf16 autocast +
channels_last, AdamW 1e-3 with polynomial decay over the time budget, batches of 8 random 256x256 crops at
scale 0.75-1.25 with horizontal flips, cross-entropy with void (11) ignored. segkit runs
``+experiment=camvid`` with ``trainer.max_time`` set. Both are scored on the 101 full 360x480 validation
images with one confusion matrix pooled over the split (void left out): mIoU over the 11 classes and the IoU
of each, from the final weights on both sides. For each seed the peer runs, then segkit; never at once. The
summary gives mean and standard deviation over the seeds.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch
from budget_runs import mean_std, parse_args, run_experiment, seeds_in_turn, train_peer_for
from PIL import Image

from segkit.metrics import iou_per_class

CLASSES = ["sky", "building", "pole", "road", "pavement", "tree", "sign_symbol", "fence", "car", "pedestrian",
           "bicyclist"]  # fmt: skip
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Normalised images ``(N, H, W, 3)`` float32 and labels ``(N, H, W)`` uint8 with void as 255."""
    names = sorted(p.name for p in (root / split).glob("*.png"))
    images = np.stack([np.asarray(Image.open(root / split / n).convert("RGB")) for n in names])
    labels = np.stack([np.asarray(Image.open(root / f"{split}annot" / n)) for n in names])
    labels = np.where(labels == 11, 255, labels).astype(np.uint8)
    return (images.astype(np.float32) / 255.0 - MEAN) / STD, labels


def random_batch(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, batch: int, crop: int = 256):
    """Random crops at a random scale in [0.75, 1.25], flipped half of the time."""
    xs, ys = [], []
    for _ in range(batch):
        i = rng.integers(len(images))
        scale = rng.uniform(0.75, 1.25)
        h, w = labels.shape[1:]
        size = (round(w * scale), round(h * scale))
        x = cv2.resize(images[i], size, interpolation=cv2.INTER_LINEAR)
        y = cv2.resize(labels[i], size, interpolation=cv2.INTER_NEAREST)
        top, left = rng.integers(0, y.shape[0] - crop + 1), rng.integers(0, y.shape[1] - crop + 1)
        x, y = x[top : top + crop, left : left + crop], y[top : top + crop, left : left + crop]
        if rng.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
        xs.append(np.ascontiguousarray(x.transpose(2, 0, 1)))
        ys.append(np.ascontiguousarray(y))
    return torch.from_numpy(np.stack(xs)), torch.from_numpy(np.stack(ys)).long()


def run_peer(root: Path, seconds: float, seed: int) -> dict[str, float]:
    """Train the peer for ``seconds`` of wall time, then score its final weights on the full validation images."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images, labels = load_split(root, "train")
    net = smp.Unet("resnet34", encoder_weights=None, classes=len(CLASSES)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    steps = train_peer_for(net, optimizer, seconds, lambda: random_batch(images, labels, rng, 8),
                           partial(torch.nn.functional.cross_entropy, ignore_index=255))  # fmt: skip
    net.eval()
    val_images, val_labels = load_split(root, "val")
    k = len(CLASSES)
    confmat = torch.zeros(k, k, dtype=torch.int64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        for first in range(0, len(val_images), 4):
            x = torch.from_numpy(val_images[first : first + 4].transpose(0, 3, 1, 2).copy())
            x = torch.nn.functional.pad(x, (0, 0, 0, 24))  # 360 -> 384 rows: smp needs multiples of 32
            pred = net(x.contiguous(memory_format=torch.channels_last)).float()[:, :, :360].argmax(1)
            target = torch.from_numpy(val_labels[first : first + 4]).long()
            valid = target != 255
            confmat += torch.bincount(target[valid] * k + pred[valid], minlength=k * k).reshape(k, k)
    iou = dict(zip(CLASSES, iou_per_class(confmat).tolist(), strict=True))
    return {"miou": float(np.nanmean(list(iou.values()))), "steps": steps, **{f"iou_{c}": v for c, v in iou.items()}}


def run_segkit(data_dir: Path, minutes: int, overrides: list[str], seed: int) -> dict[str, float]:
    """segkit's ``+experiment=camvid`` capped at ``minutes``: its final weights' scores (metrics.json)."""
    metrics, steps, run_dir = run_experiment("camvid", data_dir, minutes, [f"seed={seed}", *overrides])
    return {"miou": metrics["val/miou"], "steps": steps, **{f"iou_{c}": metrics[f"val/iou_{c}"] for c in CLASSES}}


def format_row(name: str, r: dict[str, float]) -> str:
    per_class = " ".join(f"{r[f'iou_{c}']:5.2f}" for c in CLASSES)
    return f"{name:28} {r['steps']:>6} {r['miou']:6.3f} {per_class}"


def summary_row(name: str, results: list[dict[str, float]]) -> str:
    """Mean ± standard deviation over seeds of mIoU, then the mean IoU of each class."""
    miou = mean_std([r["miou"] for r in results], digits=3)
    per_class = " ".join(f"{np.mean([r[f'iou_{c}'] for r in results]):5.2f}" for c in CLASSES)
    return f"{name:28} {np.mean([r['steps'] for r in results]):>6.0f} {miou} {per_class}"


def main() -> None:
    args, data_dir = parse_args(
        __doc__, 30, [30], "camvid", lambda parser: parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    )
    sides = {}
    if not args.skip_peer:  # smp.Unet-ResNet34 from scratch, bf16 + channels_last
        sides[f"peer smp.Unet-R34, {args.minutes:g} min"] = lambda seed: run_peer(
            data_dir / "camvid", args.minutes * 60, seed
        )
    for minutes in args.ours_minutes:
        sides[f"segkit camvid, {minutes:g} min"] = partial(run_segkit, data_dir, minutes, args.overrides)
    rows, results = seeds_in_turn(args.seeds, sides, format_row)
    short = [c[:5] for c in CLASSES]
    header = " ".join(f"{c:>5}" for c in short)
    print(f"\n{'run (final weights)':28} {'steps':>6} {'mIoU':>6} {header}")
    print("\n".join(rows))
    print(f"\n{'mean over seeds ' + str(args.seeds):28} {'steps':>6} {'mIoU ± std':>13} {header}")
    for name, runs in results.items():
        print(summary_row(name, runs))


if __name__ == "__main__":
    main()
