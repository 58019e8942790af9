"""Whether this CPU runs bf16 fast, and so which precision the CPU presets train and predict in.

bf16 autocast trains conv nets about 2x faster than fp32 on CPUs whose oneDNN kernels handle bf16 (AVX-512
cores, AVX512-BF16, AMX). Where they do not (AVX2-only CPUs, or a VM that hides AVX-512), torch falls back to
reference kernels: on such a 2-core AMD EPYC the quickstart's training step ran 16x slower in bf16 than in
fp32 (4.8 against 77 images/s; ``benchmarks/cpu_precision.py`` and ``train_loop.py``). ``trainer=cpu``
therefore asks for ``${cpu_precision:}``, and a model trained in bf16 predicts in fp32 on such a CPU.
An explicit ``trainer.precision=bf16-mixed`` (or ``precision=bf16``) is still obeyed.
"""

from __future__ import annotations

import logging
from functools import cache

import torch

log = logging.getLogger(__name__)

NO_FAST_BF16 = "this CPU has no oneDNN bf16 kernels, where a bf16 training step ran 9-16x slower than fp32"


@cache
def cpu_has_fast_bf16() -> bool:
    """oneDNN's own answer to whether it runs bf16 on this CPU (it needs at least AVX-512 cores)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch built without oneDNN
        return False


@cache
def cpu_precision() -> str:
    """The Lightning precision the CPU presets train in: ``bf16-mixed`` where it is fast, else ``32-true``
    (said once in the log: the config resolver asks at every read of the key)."""
    if cpu_has_fast_bf16():
        return "bf16-mixed"
    log.info("Training in fp32: %s (trainer.precision=bf16-mixed forces it)", NO_FAST_BF16)
    return "32-true"


HALF_PRECISIONS = ("16", "16-mixed", "bf16", "bf16-mixed", "bf16-true")  # what Lightning runs as bf16 on a CPU


def warn_slow_cpu_precision(accelerator: str, precision: object) -> bool:
    """Warn (and return ``True``) when a run is set to train in 16-bit on a CPU without bf16 kernels: such a
    precision is obeyed, but Lightning turns ``16-mixed`` into ``bf16-mixed`` on a CPU with one line of its
    own, and a step then ran 9-16x slower than in fp32 (the quickstart: 0.28 against ~2.7 it/s)."""
    on_cpu = accelerator == "cpu" or (
        accelerator == "auto" and not torch.cuda.is_available() and not torch.backends.mps.is_available()
    )
    if not on_cpu or str(precision) not in HALF_PRECISIONS or cpu_has_fast_bf16():
        return False
    log.warning("trainer.precision=%s on the CPU runs as bf16, and %s: trainer.precision=32-true is the fast "
                "one here", precision, NO_FAST_BF16)  # fmt: skip
    return True
