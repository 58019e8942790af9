"""bf16 autocast against fp32 on this CPU, and the precision segkit's CPU preset picks for it.

    NO_ALBUMENTATIONS_UPDATE=1 python benchmarks/cpu_precision.py [--steps 3]

Prints the training step time (forward, cross-entropy, backward, AdamW; the fastest of ``--steps`` after a
warm-up) of three U-Nets of segkit's recipes in fp32 (contiguous and channels-last) and in bf16 autocast with
channels-last, then what ``trainer=cpu`` resolves to here (segkit/precision.py). On CPUs with oneDNN bf16
kernels bf16 should be the faster; on AVX2-only ones it is several times slower.
"""

from __future__ import annotations

import argparse

import torch

from segkit.models import UNet
from segkit.planning.probe import time_training_step
from segkit.precision import cpu_has_fast_bf16, cpu_precision

# name, UNet arguments, batch, patch: the quickstart's network, a planned nuclei run's, the ISBI recipe's
NETWORKS = [
    ("unet_small (quickstart), 16 x 64²", {"in_channels": 3, "num_classes": 4, "base_channels": 16}, 16, 64, 3),
    ("16 ch, depth 3 (a nuclei plan), 4 x 112²", {"in_channels": 3, "num_classes": 2, "base_channels": 16}, 4, 112, 3),
    ("32 ch, depth 4 (isbi2012), 4 x 256²", {"in_channels": 1, "num_classes": 2, "base_channels": 32}, 4, 256, 4),
]  # fmt: skip
VARIANTS = [
    ("fp32", "32-true", False),
    ("fp32 channels-last", "32-true", True),
    ("bf16 channels-last", "bf16-mixed", True),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, ISA {torch.backends.cpu.get_cpu_capability()}"
    )
    print(f"{'network':44s}" + "".join(f"{name:>20s}" for name, _, _ in VARIANTS) + f"{'bf16 / fp32':>14s}")
    for name, kwargs, batch, size, depth in NETWORKS:
        ms = []
        for _, precision, channels_last in VARIANTS:
            torch.manual_seed(0)
            net = UNet(**kwargs, depth=depth)
            timed = time_training_step(net, batch, kwargs["in_channels"], (size, size), kwargs["num_classes"],
                                       precision=precision, channels_last=channels_last, steps=args.steps)  # fmt: skip
            ms.append(timed["seconds"] * 1000)
        print(f"{name:44s}" + "".join(f"{t:>17.0f} ms" for t in ms) + f"{ms[2] / min(ms[:2]):>13.2f}x", flush=True)
    print(f"oneDNN bf16 kernels: {cpu_has_fast_bf16()}; trainer=cpu trains in {cpu_precision()}")


if __name__ == "__main__":
    main()
