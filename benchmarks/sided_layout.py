"""Images with a left and a right: does the plan's augmentation keep the sides apart?

Writes a folder of grey 128x128 "chest" images with two blobs of the same look, one in each half: the left one
is class 1, the right one class 2 (as the left and right lung of a chest X-ray). Only where a blob lies tells
the classes apart, so a pipeline that mirrors left-right teaches the network that either side may be either
class. Trains ``+experiment=auto`` for ``--minutes`` per seed with the plan's augmentation and with each
pipeline in ``--aug`` (``aug=NAME``), and scores the final weights with ``segkit.eval`` (its defaults, the
run's recorded TTA):

    python benchmarks/sided_layout.py --minutes 2 --seeds 42 7 3 --aug em sided
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from budget_runs import eval_last, print_means, run_experiment  # noqa: E402

SIZE = 128


def chest(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One grey image and its mask: background 0, left blob 1, right blob 2 (same brightness and shape law)."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    signal = np.zeros((SIZE, SIZE), np.float32)
    for label, side in ((1, 0.27), (2, 0.73)):
        cy, cx = SIZE * rng.uniform(0.4, 0.6), SIZE * (side + rng.uniform(-0.06, 0.06))
        a, b = SIZE * rng.uniform(0.12, 0.2), SIZE * rng.uniform(0.1, 0.14)
        inside = ((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 <= 1
        mask[inside] = label
        signal[inside] = rng.uniform(0.5, 1.0)
    texture = ndimage.gaussian_filter(rng.normal(0, 1, (SIZE, SIZE)).astype(np.float32), 2.0)
    image = ndimage.gaussian_filter(signal, 1.5) * 150 + 40 + 18 * texture + rng.normal(0, 8, (SIZE, SIZE))
    return np.clip(image, 0, 255).astype(np.uint8), mask


def write_folder(root: Path, train: int = 32, val: int = 16, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for split, n in (("train", train), ("val", val)):
        for sub in ("images", "masks"):
            (root / split / sub).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            image, mask = chest(rng)
            Image.fromarray(image).save(root / split / "images" / f"{i:03d}.png")
            Image.fromarray(mask).save(root / split / "masks" / f"{i:03d}.png")
    print(f"wrote {train} training and {val} validation images to {root}", flush=True)


def score(run_dir: Path) -> dict:
    """``segkit.eval`` of the run's final weights with its defaults."""
    scores = json.loads((eval_last(run_dir) / "eval.json").read_text())
    return {k: float(scores[f"val/{k}"]) for k in ("miou", "iou_class_1", "iou_class_2")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 3])
    parser.add_argument("--aug", nargs="*", default=["em"], help="pipelines to train beside the plan's")
    parser.add_argument("--folder", type=Path, default=Path("outputs/sided_folder"))
    args = parser.parse_args()
    folder = args.folder.resolve()
    if not (folder / "val" / "masks").is_dir():
        write_folder(folder)
    sides = {"plan": [], **{f"aug={name}": [f"aug={name}"] for name in args.aug}}
    results: dict[str, list[dict]] = {side: [] for side in sides}
    for seed in args.seeds:
        for side, overrides in sides.items():
            print(f"[{side}] seed {seed}, {args.minutes:g} min", flush=True)
            common = ["data=folder", "data.num_classes=3", f"seed={seed}"]
            _, steps, run_dir = run_experiment("auto", folder, args.minutes, [*common, *overrides], name="sided")
            plan = json.loads((run_dir / "fingerprint.json").read_text())["decisions"]
            chosen = {key: value for key, value, _ in plan}
            scores = {**score(run_dir), "steps": steps}
            results[side].append(scores)
            aug = chosen.get("aug") if side == "plan" else side.removeprefix("aug=")  # a typed aug wins
            print(f"  aug {aug} tta {chosen.get('task.tta')}: "
                  + " ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in scores.items()),
                  flush=True)  # fmt: skip
    title = f"{args.minutes:g} min, final weights, segkit.eval; seeds {args.seeds}"
    print_means(title, results, ("miou", "iou_class_1", "iou_class_2"))


if __name__ == "__main__":
    main()
