"""Training-step throughput: segkit UNet(encoder="resnet34") vs smp.Unet("resnet34"), same run, same data.

    NO_ALBUMENTATIONS_UPDATE=1 python benchmarks/train_step.py [--batch-size 4] [--size 256] [--steps 8]

Prints images/second (median of alternating rounds) for fp32 and for bf16 autocast + channels_last, and
segkit's speed relative to smp.
Both models are random-init (the weights do not change the speed) and train with AdamW on cross-entropy.
"""

from __future__ import annotations

import argparse
import statistics
import time

import segmentation_models_pytorch as smp
import torch
from torch import nn

from segkit.models import UNet


class StepTimer:
    """One model's training step on fixed random data; ``time(steps)`` returns images/second."""

    def __init__(self, net: nn.Module, batch_size: int, size: int, bf16: bool, device: str) -> None:
        self.net = net.to(device).train()
        self.x = torch.rand(batch_size, 3, size, size, device=device)
        self.y = torch.randint(0, 2, (batch_size, size, size), device=device)
        if bf16:
            self.net = self.net.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=1e-3)
        self.bf16, self.device = bf16, device
        self.time(2)  # warm-up: allocator, oneDNN/cuDNN kernel selection

    def step(self) -> None:
        with torch.autocast(device_type=self.device, dtype=torch.bfloat16, enabled=self.bf16):
            loss = nn.functional.cross_entropy(self.net(self.x).float(), self.y)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def time(self, steps: int) -> float:
        if self.device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            self.step()
        if self.device == "cuda":
            torch.cuda.synchronize()
        return self.x.shape[0] * steps / (time.perf_counter() - start)


def main() -> None:
    """Run the comparison and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; the median is reported")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(f"device={args.device} threads={torch.get_num_threads()} batch={args.batch_size} size={args.size}²")
    builders = {
        "segkit UNet(resnet34)": lambda: UNet(num_classes=2, encoder="resnet34"),
        "smp.Unet(resnet34)": lambda: smp.Unet("resnet34", encoder_weights=None, classes=2),
    }
    speeds: dict[str, list[float]] = {name: [] for name in builders}
    for bf16 in (False, True):
        torch.manual_seed(0)
        timers = {
            name: StepTimer(build(), args.batch_size, args.size, bf16, args.device) for name, build in builders.items()
        }
        rounds: dict[str, list[float]] = {name: [] for name in builders}
        for _ in range(args.rounds):  # alternate the models so machine noise hits both alike
            for name, timer in timers.items():
                rounds[name].append(timer.time(args.steps))
        for name in builders:
            speeds[name].append(statistics.median(rounds[name]))
    print("| model | params | fp32 img/s | bf16 + channels_last img/s |")
    print("|---|---|---|---|")
    for name, build in builders.items():
        params = sum(p.numel() for p in build().parameters()) / 1e6
        print(f"| {name} | {params:.2f} M | {speeds[name][0]:.2f} | {speeds[name][1]:.2f} |")
    ours, theirs = speeds["segkit UNet(resnet34)"], speeds["smp.Unet(resnet34)"]
    print(f"| segkit / smp | | {ours[0] / theirs[0]:.2f}x | {ours[1] / theirs[1]:.2f}x |")


if __name__ == "__main__":
    main()
