"""The same EM slices as 8-bit PNGs and as a 12-bit camera's 16-bit TIFFs: does the plan's high-bit path lose?

    python benchmarks/bit_depth.py --minutes 5 --seeds 42 7 3

Microscopes mostly write 16-bit TIFFs, and ``+experiment=auto`` plans them differently from 8-bit images: each
image is scaled by its own 0.5-99.5 percentiles (nnU-Net's scheme for non-CT data) before the folder's z-score,
where 8-bit images are divided by 255. Unit tests check that the plan takes that path; this script checks what it
costs on real data. It writes ISBI 2012's 30 slices twice under ``--folder`` as ``data=folder`` layouts (slices
24-29 validate, as in ``conf/data/isbi2012.yaml``; masks hold class indices, membrane 1):

- ``png8``: the slices as stored;
- ``tiff16``: ``16 v + 96`` as uint16 TIFFs, what a 12-bit camera with a dark offset records of the same scene
  (a linear map, so the two folders hold the same information and only the plan's handling differs).

Both run ``+experiment=auto`` with the data and the budget only (plus the adapted Rand error to score), one after
the other with the same seed, and are scored the same way: one validation of the final weights (``val/*``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from budget_runs import mean_std, parse_args, run_experiment, seeds_in_turn  # noqa: E402

VAL_STEMS = {"24", "25", "26", "27", "28", "29"}
SCORES = ("val/pixel_error", "val/iou_membrane", "val/adapted_rand_error")
GAIN, OFFSET = 16, 96  # 8 bits of signal in a 12-bit range, above a camera's dark level


def write_copies(source: Path, folder: Path) -> dict[str, Path]:
    """``folder/{png8,tiff16}/{train,val}/{images,masks}``, written once; returns the two roots."""
    roots = {"png8": folder / "png8", "tiff16": folder / "tiff16"}
    if all((root / "val" / "masks").is_dir() for root in roots.values()):
        return roots
    for path in sorted((source / "images").glob("*.png")):
        split = "val" if path.stem in VAL_STEMS else "train"
        image = np.asarray(Image.open(path).convert("L"))
        mask = (np.asarray(Image.open(source / "masks" / path.name)) == 0).astype(np.uint8)  # stored 0: membrane
        for root in roots.values():
            for sub in ("images", "masks"):
                (root / split / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask).save(root / split / "masks" / f"{path.stem}.png")
        Image.fromarray(image).save(roots["png8"] / split / "images" / path.name)
        high = (image.astype(np.uint16) * GAIN + OFFSET).astype(np.uint16)
        Image.fromarray(high).save(roots["tiff16"] / split / "images" / f"{path.stem}.tif")
    print(f"wrote the slices as 8-bit PNGs and 16-bit TIFFs under {folder}", flush=True)
    return roots


def main() -> None:
    def extra(parser):
        parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 3])
        parser.add_argument("--sides", nargs="+", choices=["png8", "tiff16"], default=["png8", "tiff16"])
        parser.add_argument("--folder", type=Path, default=Path("outputs/isbi_bit_depth"))

    args, data_dir = parse_args(__doc__, 5, None, "isbi2012_em", extra)
    roots = write_copies(data_dir / "isbi2012_em" / "train", args.folder.resolve())
    common = ["data=folder", "data.num_classes=2", "data.class_names=[interior,membrane]",
              "task.image_metrics=[adapted_rand_error]", *args.overrides]  # fmt: skip

    def side(name: str):
        def run(seed: int) -> dict:
            metrics, steps, run_dir = run_experiment("auto", roots[name], args.minutes, [*common, f"seed={seed}"],
                                                     name=f"bit_depth_{name}")  # fmt: skip
            print(f"  {run_dir}", flush=True)
            return {key: float(metrics[key]) for key in SCORES} | {"steps": steps}

        return run

    def row(label: str, result: dict) -> str:
        return f"| {label} | {result['steps']} | " + " | ".join(f"{result[key]:.4f}" for key in SCORES) + " |"

    rows, results = seeds_in_turn(args.seeds, {name: side(name) for name in args.sides}, row)
    header = "| side, seed | steps | " + " | ".join(SCORES) + " |\n" + "|---" * (len(SCORES) + 2) + "|"
    print(f"\nISBI 2012 as 8-bit and 16-bit images, {args.minutes:g} min a run, final weights\n{header}")
    print("\n".join(rows))
    for name, values in results.items():
        cells = " | ".join(mean_std([v[key] for v in values]) for key in SCORES)
        print(f"| {name}, mean ± sd | {np.mean([v['steps'] for v in values]):.0f} | {cells} |")


if __name__ == "__main__":
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    main()
