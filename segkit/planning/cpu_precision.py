"""bf16 autocast or fp32 on the CPU: which one each probed network trains faster in.

On a CPU with oneDNN bf16 kernels, bf16's lead grows with the network: on the AMX-BF16 2-core CPU
(benchmarks/README.md, 4 x 112² crops, channels-last) a step cost 40 ms in bf16 against 48 in fp32 at 8
channels, 38 against 70 at 16 and 83 against 213 at 32. A choice made once at the narrowest width is a
coin toss between two close figures, and it then sets the cost of every wider one: where a stalled bf16
reading handed 8 channels to fp32, 16 channels read 1.5-1.8x 8's step in fp32 and the 5-minute width cap
(1.5x) planned 8 channels, where bf16 plans took 16. So each network is read in both precisions until
bf16 wins at one, and wider ones are read in bf16 only.
"""

from __future__ import annotations

from collections.abc import Callable

from segkit.precision import NO_FAST_BF16, cpu_has_fast_bf16

FP32, BF16 = "32-true", "bf16-mixed"


def choose_cpu_precision(step_time: Callable[[int | str, str], float], width: int | str) -> tuple[str, float, str]:
    """bf16 autocast or fp32, whichever trains ``width`` faster; returns the precision, its step time and the
    reason. A CPU without oneDNN bf16 kernels runs bf16 9-16x slower than fp32 (:mod:`segkit.precision`),
    so there it is not probed. Where fp32 reads faster, both are read once more and each one's faster reading
    counts: a stall only adds time, and this is a comparison, not a forecast of the run's speed. On ISBI one
    stalled bf16 reading (1150 ms against fp32's 1041, where four plans of the same hour read bf16 at 485-608
    ms and fp32 at 1036-1139) planned fp32 and flips-only augmentation: 184 steps, against 304-421 for its
    neighbours."""
    if not cpu_has_fast_bf16():
        return FP32, step_time(width, FP32), f"{NO_FAST_BF16} (not probed)"
    fp32, bf16 = step_time(width, FP32), step_time(width, BF16)
    why = f"probe at {width}: bf16 {bf16 * 1000:.0f} ms vs fp32 {fp32 * 1000:.0f} ms a step"
    if bf16 >= fp32:
        fp32_again, bf16_again = step_time(width, FP32), step_time(width, BF16)
        again = f"bf16 {bf16_again * 1000:.0f} ms vs fp32 {fp32_again * 1000:.0f} ms"
        why += f"; read again: {again}, the faster of each counts"
        fp32, bf16 = min(fp32, fp32_again), min(bf16, bf16_again)
    return (BF16 if bf16 < fp32 else FP32), min(bf16, fp32), why


class ProbedPrecision:
    """A probe that times each network in its faster precision (``self(width) -> seconds``) and remembers
    which that was (:meth:`of`). ``step_time(width, precision)`` times one reading.

    Until bf16 wins at some network, each new one is read in both (:func:`choose_cpu_precision`); from then
    on, wider ones in bf16 alone (the probes go narrowest first, and bf16's lead grows with the network).
    A network read again is read in the precision it was given."""

    def __init__(self, step_time: Callable[[int | str, str], float]) -> None:
        self.step_time = step_time
        self.chosen: dict[int | str, tuple[str, str]] = {}  # network -> (precision, reason)
        self.bf16_from: int | str | None = None  # the network at which bf16 first won

    def __call__(self, width: int | str) -> float:
        if width in self.chosen:
            return self.step_time(width, self.chosen[width][0])
        if self.bf16_from is not None:
            self.chosen[width] = (BF16, self.chosen[self.bf16_from][1])
            return self.step_time(width, BF16)
        precision, seconds, why = choose_cpu_precision(self.step_time, width)
        self.chosen[width] = (precision, why)
        if precision == BF16:
            self.bf16_from = width
            if len(self.chosen) > 1:
                why += "; fp32 was faster at the narrower network, and bf16's lead grows with the network"
            self.chosen[width] = (precision, why + "; wider networks are read in bf16 only")
        return seconds

    def of(self, width: int | str) -> tuple[str, str]:
        """The precision ``width`` was timed in, and why."""
        return self.chosen[width]
