"""``+experiment=auto`` against a hand-tuned recipe at equal wall time, seeds in turn, final weights on both.

    python benchmarks/auto_vs_recipe.py --dataset isbi2012 --minutes 5 --seeds 42 7 3
    python benchmarks/auto_vs_recipe.py --dataset isbi2012 --minutes 2 --seeds 42 -- trainer=gpu   # one GPU
    python benchmarks/auto_vs_recipe.py --dataset camvid --minutes 30 --seeds 42 --sides auto

Both sides run through ``python -m segkit.train`` one after the other (never two at once) with the same
budget and seed, and are scored the same way: one validation of the final weights (``val/*`` in metrics.json)
on the data config's validation split. The auto side gets only the data choice, the budget and the scores
to log (``task.image_metrics``), nothing tuned.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from budget_runs import run_experiment  # noqa: E402

SCORES = {
    "isbi2012": ["val/pixel_error", "val/iou_membrane", "val/adapted_rand_error"],
    "camvid": ["val/miou", "val/iou_pole", "val/iou_bicyclist"],
}
SCORING = {"isbi2012": ["task.image_metrics=[adapted_rand_error]"], "camvid": []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(SCORES), default="isbi2012")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 3])
    parser.add_argument(
        "--sides",
        nargs="+",
        choices=["recipe", "auto"],
        default=["recipe", "auto"],
        help="rerun one side only (e.g. after a planner change; the recipe's runs do not move)",
    )
    parser.add_argument("--data-dir", default=os.environ.get("SEGKIT_DATA_DIR", "../shared/data"))
    parser.add_argument("overrides", nargs="*", help="overrides for both sides (after --), e.g. trainer=gpu")
    args = parser.parse_args()
    data_dir = Path(args.data_dir).resolve()
    sides = {
        "recipe": (args.dataset, []),
        "auto": ("auto", [f"data={args.dataset}", *SCORING[args.dataset]]),
    }
    sides = {side: sides[side] for side in args.sides}
    results: dict[str, list[dict]] = {side: [] for side in sides}
    for seed in args.seeds:
        for side, (experiment, extra) in sides.items():
            print(f"[{side}] seed {seed}, {args.minutes:g} min", flush=True)
            metrics, steps, run_dir = run_experiment(experiment, data_dir, args.minutes,
                                                     [*extra, f"seed={seed}", *args.overrides])  # fmt: skip
            row = {k: metrics.get(k, float("nan")) for k in SCORES[args.dataset]} | {"steps": steps}
            results[side].append(row)
            print(f"  {run_dir}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)

    keys = [*SCORES[args.dataset], "steps"]
    print(f"\n{args.dataset}, {args.minutes:g} min a run, seeds {args.seeds}, final weights on both sides")
    print("| side | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for side, rows in results.items():
        cells = []
        for key in keys:
            values = [r[key] for r in rows]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.4f} ± {spread:.4f}" if key != "steps" else
                         f"{statistics.mean(values):.0f}")  # fmt: skip
        print(f"| {side} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
