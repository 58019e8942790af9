"""Training-step throughput: segkit UNet(encoder="resnet34") vs smp.Unet("resnet34"), same run, same data.

    NO_ALBUMENTATIONS_UPDATE=1 python benchmarks/train_step.py [--batch-size 4] [--size 256] [--steps 8]

Prints images/second for fp32 and for bf16 autocast + channels_last, and segkit's speed relative to smp.
Both models are random-init (the weights do not change the speed) and train with AdamW on cross-entropy.
"""

from __future__ import annotations

import argparse
import time

import segmentation_models_pytorch as smp
import torch
from torch import nn

from segkit.models import UNet


def images_per_second(net: nn.Module, batch_size: int, size: int, steps: int, bf16: bool, device: str) -> float:
    """Median-free simple timing: ``steps`` timed steps after 2 warm-up steps."""
    net = net.to(device).train()
    x = torch.rand(batch_size, 3, size, size, device=device)
    y = torch.randint(0, 2, (batch_size, size, size), device=device)
    if bf16:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)

    def step() -> None:
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            loss = nn.functional.cross_entropy(net(x).float(), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch_size * steps / (time.perf_counter() - start)


def main() -> None:
    """Run the comparison and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    print(f"device={args.device} threads={torch.get_num_threads()} batch={args.batch_size} size={args.size}²")
    print("| model | params | fp32 img/s | bf16 + channels_last img/s |")
    print("|---|---|---|---|")
    results = {}
    for name, build in [
        ("segkit UNet(resnet34)", lambda: UNet(num_classes=2, encoder="resnet34")),
        ("smp.Unet(resnet34)", lambda: smp.Unet("resnet34", encoder_weights=None, classes=2)),
    ]:
        torch.manual_seed(0)
        speeds = [
            images_per_second(build(), args.batch_size, args.size, args.steps, bf16, args.device)
            for bf16 in (False, True)
        ]
        results[name] = speeds
        params = sum(p.numel() for p in build().parameters()) / 1e6
        print(f"| {name} | {params:.2f} M | {speeds[0]:.2f} | {speeds[1]:.2f} |")
    ours, theirs = results["segkit UNet(resnet34)"], results["smp.Unet(resnet34)"]
    print(f"| segkit / smp | | {ours[0] / theirs[0]:.2f}x | {ours[1] / theirs[1]:.2f}x |")


if __name__ == "__main__":
    main()
