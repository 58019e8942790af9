"""Step-time probes on the device the run will use: a few real optimisation steps of a candidate network.

The planner chooses width, batch, precision and validation cadence from these timings rather than from
guesses, because the same network is 50x apart between two CPU cores and one GPU.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

import torch
from torch import nn


def autocast(device: str, precision: str):
    """The autocast context a Lightning ``precision`` string means (``32-true`` / ``bf16-mixed`` / ``16-mixed``)."""
    if precision.startswith("bf16"):
        return torch.autocast(device, dtype=torch.bfloat16)
    if precision.startswith("16"):
        return torch.autocast(device, dtype=torch.float16)
    return nullcontext()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_training_step(
    net: nn.Module,
    batch: int,
    in_channels: int,
    patch: tuple[int, int],
    num_classes: int,
    device: str = "cpu",
    precision: str = "32-true",
    channels_last: bool = False,
    steps: int = 3,
) -> dict:
    """Seconds per optimisation step (forward, cross-entropy, backward, AdamW) on random data: the fastest of
    ``steps`` after one warm-up step, since another process on the machine can only add time (a mean of two
    once let a busy moment halve the planned width); on CUDA also the peak memory in bytes."""
    net = net.to(device).train()
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    image = torch.randn(batch, in_channels, *patch, device=device)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, num_classes, (batch, *patch), device=device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = []
    for _ in range(steps + 1):
        _sync(device)
        start = time.perf_counter()
        with autocast(device, precision):
            out = net(image)
            logits = out[0] if isinstance(out, tuple | list) else out
            loss = nn.functional.cross_entropy(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return {"seconds": float(min(seconds[1:])), "peak_bytes": peak}


@torch.no_grad()
def time_forward(
    net: nn.Module, in_channels: int, size: tuple[int, int], device: str = "cpu", precision: str = "32-true"
) -> float:
    """Seconds for one evaluation forward pass of a ``size`` image (a validation image), after a warm-up."""
    net = net.to(device).eval()
    image = torch.randn(1, in_channels, *size, device=device)
    seconds = []
    for _ in range(2):
        _sync(device)
        start = time.perf_counter()
        with autocast(device, precision):
            net(image)
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return float(seconds[-1])
