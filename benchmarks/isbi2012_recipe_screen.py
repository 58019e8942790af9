"""Choose the ISBI 2012 recipe without looking at the slices it is reported on.

    NO_ALBUMENTATIONS_UPDATE=1 python benchmarks/isbi2012_recipe_screen.py [--minutes 5] [--seeds 42]
        [--data-dir ../shared/data]

Each candidate trains ``+experiment=isbi2012`` with its overrides on slices 0-17 and is scored (final weights,
full slices) on slices 18-23, a contiguous block as the reported split 24-29 is (neighbouring slices
correlate). Slices 24-29 are not read. The candidate with the best membrane IoU (the recipe's
``optimized_metric``) is the one to report on 24-29 (``benchmarks/isbi2012_vs_peer.py``). The runs go one
after the other, never at once.
"""

from __future__ import annotations

import numpy as np
from budget_runs import parse_args, print_means, run_experiment, seeds_in_turn

FOLD_TRAIN = list(range(18))
FOLD_VAL = list(range(18, 24))
NEVER = list(range(24, 30))
CANDIDATES = {
    "recipe (16 channels, elastic)": [],
    "32 channels": ["model.base_channels=32"],
    "8 channels": ["model.base_channels=8"],
    "flips only (no rotations, no elastic)": ["aug=light"],
}
KEYS = ("pixel_error", "iou_membrane", "adapted_rand_error")


def fold_overrides() -> list[str]:
    """Train on 0-17, validate on 18-23; 24-29 are excluded from both."""
    return [f"data.train_dataset.exclude_stems=[{','.join(map(str, FOLD_VAL + NEVER))}]",
            f"data.val_dataset.stems=[{','.join(map(str, FOLD_VAL))}]"]  # fmt: skip


def main() -> None:
    args, data_dir = parse_args(
        __doc__, 5, None, "isbi2012_em",
        lambda parser: parser.add_argument("--seeds", type=int, nargs="+", default=[42]),
    )  # fmt: skip

    def side(overrides: list[str]):
        def run(seed: int) -> dict:
            extra = [*fold_overrides(), f"seed={seed}", *overrides, *args.overrides]
            metrics, steps, _ = run_experiment("isbi2012", data_dir, args.minutes, extra)
            return {**{k: metrics[f"val/{k}"] for k in KEYS}, "steps": steps}

        return run

    def format_row(name: str, row: dict) -> str:
        return f"{name:48} {row['steps']:>5} steps  " + "  ".join(f"{k} {row[k]:.4f}" for k in KEYS)

    sides = {name: side(overrides) for name, overrides in CANDIDATES.items()}
    _, results = seeds_in_turn(args.seeds, sides, format_row)
    print_means("candidate (train 0-17, score 18-23)", results, KEYS)
    best = max(results, key=lambda n: np.mean([r["iou_membrane"] for r in results[n]]))
    print(f"\nchosen by membrane IoU on slices 18-23: {best}")


if __name__ == "__main__":
    main()
