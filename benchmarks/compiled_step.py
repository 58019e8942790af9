"""Whether ``torch.compile`` (``task.compile=true``) buys a planned U-Net faster training steps.

    python benchmarks/compiled_step.py [--widths 16 32] [--patch 112] [--batch 4] [--depth 3] [--precision bf16-mixed]

Times each width's training step (forward, cross-entropy, backward, AdamW on random data, channels-last, as
the planner's probe does) eagerly and through ``torch.compile``, in alternating rounds: the mean step of each
round, the median round counts. The compiled side's first step compiles, with an empty inductor cache (a
first run's cost; later runs on the machine reuse the cache). The defaults are the 5-minute nuclei plan's
network on a CPU. A compiled run pays the compile time out of its budget, so it must save more than that
over its steps to pay. Run it alone: it times torch.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

import torch
from torch import nn

from segkit.models import UNet
from segkit.planning.probe import autocast


def mean_step_seconds(net: nn.Module, image: torch.Tensor, target: torch.Tensor, precision: str, steps: int) -> float:
    """The mean seconds of ``steps`` training steps (AdamW) on one fixed batch."""
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    device = image.device.type
    start = time.perf_counter()
    for _ in range(steps):
        with autocast(device, precision):
            loss = nn.functional.cross_entropy(net(image).float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--patch", type=int, default=112)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--in-channels", type=int, default=3)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--steps", type=int, default=30, help="steps per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per side, eager and compiled alternating")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="segkit_inductor_")  # a cold compile

    image = torch.randn(args.batch, args.in_channels, args.patch, args.patch, device=args.device)
    image = image.contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 2, (args.batch, args.patch, args.patch), device=args.device)
    print(f"{args.device} {args.precision}, patch {args.patch}² x {args.batch}, depth {args.depth}", flush=True)
    print(f"{'width':>6} {'eager ms':>9} {'compiled ms':>12} {'compile s':>10} {'steps to pay':>13}", flush=True)
    for width in args.widths:
        nets = {}
        for side in ("eager", "compiled"):
            torch.manual_seed(0)
            net = UNet(num_classes=2, in_channels=args.in_channels, depth=args.depth, base_channels=width)
            net = net.to(args.device, memory_format=torch.channels_last).train()
            nets[side] = torch.compile(net) if side == "compiled" else net
        start = time.perf_counter()
        mean_step_seconds(nets["compiled"], image, target, args.precision, 1)
        compile_seconds = time.perf_counter() - start
        mean_step_seconds(nets["eager"], image, target, args.precision, 1)  # warm-up: allocator, oneDNN
        rounds: dict[str, list[float]] = {"eager": [], "compiled": []}
        for _ in range(args.rounds):
            for side, net in nets.items():
                rounds[side].append(mean_step_seconds(net, image, target, args.precision, args.steps))
        ms = {side: 1000 * statistics.median(r) for side, r in rounds.items()}
        saved = (ms["eager"] - ms["compiled"]) / 1000
        pay = f"{compile_seconds / saved:.0f}" if saved > 0 else "never"
        print(f"{width:>6} {ms['eager']:>9.1f} {ms['compiled']:>12.1f} {compile_seconds:>10.1f} {pay:>13}", flush=True)


if __name__ == "__main__":
    main()
