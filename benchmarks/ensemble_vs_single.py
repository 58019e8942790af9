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

import torch
from budget_runs import parse_args, print_means, run_experiment, seeds_in_turn

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
        __doc__, 5, None, "isbi2012_em",
        lambda parser: (parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 3]),
                        parser.add_argument("--folds", type=int, default=5)),
    )  # fmt: skip

    def one_model(seed: int) -> dict:
        _, steps, run_dir = run_experiment("auto", data_dir, args.minutes, [*SCORING, f"seed={seed}", *args.overrides])
        return {**score(run_dir, data_dir), "steps": steps}

    def ensemble(seed: int) -> dict:
        sweep, steps = train_folds(data_dir, args.minutes, args.folds, seed)
        return {**score(sweep, data_dir), "steps": steps}

    def format_row(name: str, row: dict) -> str:
        return f"{name:48} {row['steps']:>5} steps  " + "  ".join(f"{k} {row[k]:.4f}" for k in KEYS)

    sides = {f"one model, {args.minutes:g} min": one_model,
             f"{args.folds}-fold ensemble, {args.minutes / args.folds:g} min a fold": ensemble}  # fmt: skip
    _, results = seeds_in_turn(args.seeds, sides, format_row)
    print_means(f"slices 24-29, seeds {args.seeds}", results, KEYS)


if __name__ == "__main__":
    main()
