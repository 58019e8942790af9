"""A k-fold ensemble of ``+experiment=auto`` against one model on the same total budget (ISBI 2012).

    NO_ALBUMENTATIONS_UPDATE=1 python benchmarks/ensemble_vs_single.py [--minutes 5] [--folds 5]
        [--seeds 42 7 3] [--data-dir ../shared/data]

For each seed, one after the other (never two runs at once):
- one model: ``+experiment=auto data=isbi2012`` trained on slices 0-23 for ``--minutes``;
- an ensemble: ``-m +experiment=auto data=isbi2012 data.num_folds=K data.fold=0,...,K-1``, each fold for
  ``--minutes / K`` (the same total compute), planned once for all folds; its members' probabilities are
  averaged tile by tile.
Both are scored by ``python -m segkit.eval ... data=isbi2012 split=val`` on slices 24-29, which neither the
planner nor any fold looked at: pixel error, membrane IoU and adapted Rand error, final weights.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from budget_runs import parse_args, run_experiment

KEYS = ("pixel_error", "iou_membrane", "adapted_rand_error")
SCORING = ["data=isbi2012", "task.image_metrics=[adapted_rand_error]"]
ENV = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}


def clock(minutes: float) -> str:
    mins, secs = divmod(round(minutes * 60), 60)
    hours, mins = divmod(mins, 60)
    return f"00:{hours:02d}:{mins:02d}:{secs:02d}"


def score(ckpt: Path, data_dir: Path) -> dict[str, float]:
    """``segkit.eval`` on slices 24-29 (the data config's own validation split)."""
    out = ckpt / "eval_24_29" if ckpt.is_dir() else ckpt.parent / "eval_24_29"
    command = [sys.executable, "-m", "segkit.eval", f"ckpt={ckpt}", "data=isbi2012", f"paths.data_dir={data_dir}",
               "split=val", f"output={out}"]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=ENV)
    scores = json.loads((out / "eval.json").read_text())
    return {k: scores[f"val/{k}"] for k in KEYS}


def train_folds(data_dir: Path, minutes: float, folds: int, seed: int) -> tuple[Path, int]:
    """The k-fold multirun; returns its directory and the optimizer steps summed over folds."""
    sweep = Path("outputs") / "benchmark_ensemble" / f"folds{folds}_seed{seed}_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    command = [sys.executable, "-m", "segkit.train", "-m", "+experiment=auto", *SCORING, f"paths.data_dir={data_dir}",
               f"data.num_folds={folds}", f"data.fold={','.join(map(str, range(folds)))}", f"seed={seed}",
               f"trainer.max_time={clock(minutes / folds)}", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    print("  " + " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env=ENV)
    steps = 0
    for last in sorted(sweep.glob("*/checkpoints/last.ckpt")):
        steps += int(torch.load(last, map_location="cpu", weights_only=True)["global_step"])
    return sweep, steps


def main() -> None:
    args, data_dir = parse_args(
        __doc__, 5, [5], "isbi2012_em",
        lambda parser: (parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 3]),
                        parser.add_argument("--folds", type=int, default=5)),
    )  # fmt: skip
    results: dict[str, list[dict]] = {"one model": [], f"{args.folds}-fold ensemble": []}
    for seed in args.seeds:
        print(f"one model, {args.minutes:g} min, seed {seed}", flush=True)
        _, steps, run_dir = run_experiment("auto", data_dir, args.minutes, [*SCORING, f"seed={seed}", *args.overrides])
        row = {**score(run_dir, data_dir), "steps": steps}
        results["one model"].append(row)
        print("  " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
        print(f"{args.folds} folds, {args.minutes / args.folds:g} min each, seed {seed}", flush=True)
        sweep, steps = train_folds(data_dir, args.minutes, args.folds, seed)
        row = {**score(sweep, data_dir), "steps": steps}
        results[f"{args.folds}-fold ensemble"].append(row)
        print("  " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
    print(f"\nslices 24-29, {args.minutes:g} min in all per side, seeds {args.seeds}, final weights")
    print(f"{'side':24} {'steps':>6} " + " ".join(f"{k:>20}" for k in KEYS))
    for side, rows in results.items():
        cells = []
        for key in KEYS:
            values = np.array([r[key] for r in rows])
            cells.append(f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.4f}")
        print(f"{side:24} {np.mean([r['steps'] for r in rows]):>6.0f} " + " ".join(f"{c:>20}" for c in cells))


if __name__ == "__main__":
    main()
