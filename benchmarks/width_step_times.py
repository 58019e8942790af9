"""How a plain U-Net's training step grows with its width, and whether the planner's bound on it holds.

    python benchmarks/width_step_times.py --patch 256 --depth 5 --widths 8 16 24 32 48 [--repeats 2]

The planner probes widths in order and skips a wider one when even a lower bound on its step time misses the
floors (``segkit.planning.decisions.next_width_bound``). The bound assumes the step time is a convex function
of the width (a constant, plus terms linear and quadratic in the channel counts, as convolution work is), so
from two probed widths the next one's time grows at least as fast as the last pair's slope. This times every
width with the planner's own probe (fastest of 3 steps after a warm-up, random data, AdamW) and prints each
measured time beside the bound from the widths a half and a quarter as wide (the planner's
widths double: 8, 16, 32 on a CPU, 16, 32, 64 on a GPU). Run it alone: it times torch.
"""

from __future__ import annotations

import argparse

import torch

from segkit.models import UNet
from segkit.planning.decisions import next_width_bound
from segkit.planning.probe import time_training_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument("--norm", default="batch")
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 24, 32, 48])
    parser.add_argument("--precision", default="32-true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=1, help="probe every width this many times, in rounds")
    args = parser.parse_args()

    readings: dict[int, list[float]] = {w: [] for w in args.widths}
    for _ in range(args.repeats):
        for width in args.widths:
            net = UNet(num_classes=args.classes, in_channels=args.in_channels, depth=args.depth,
                       base_channels=width, norm=args.norm)  # fmt: skip
            probed = time_training_step(net, args.batch, args.in_channels, (args.patch, args.patch), args.classes,
                                        args.device, args.precision, channels_last=True)  # fmt: skip
            readings[width].append(probed["seconds"])
    fastest = {w: min(r) for w, r in readings.items()}
    print(f"{args.device} {args.precision}, patch {args.patch}² x {args.batch}, depth {args.depth}, norm {args.norm}")
    print(f"{'width':>6} {'ms (each reading)':>28} {'bound ms':>9} {'measured/bound':>15}")
    for width in args.widths:
        each = " / ".join(f"{1000 * s:.0f}" for s in readings[width])
        bound, ratio = "", ""
        if width % 4 == 0 and {width // 4, width // 2} <= set(fastest):  # the planner's doubling widths
            b = next_width_bound({w: fastest[w] for w in (width // 4, width // 2)}, width)
            bound, ratio = f"{1000 * b:.0f}", f"{fastest[width] / b:.2f}"
        print(f"{width:>6} {each:>28} {bound:>9} {ratio:>15}")


if __name__ == "__main__":
    main()
