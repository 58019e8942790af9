"""Learning-rate schedules that know the training budget, in steps and in wall time.

With ``trainer.max_time`` set, training stops on the clock, usually long before ``max_epochs``; a schedule
that decays over epochs would then stop with the learning rate still high. :class:`PolyLR` and
:class:`CosineLR` decay over whichever budget runs out first:
``progress = max(step / total_steps, elapsed / max_seconds)``, stepped every batch.
The task fills ``total_steps`` (Lightning's ``estimated_stepping_batches``) and ``max_seconds`` (from
``trainer.max_time``) for any scheduler whose constructor takes them.

Under DDP every process must set the same learning rate, or the replicas drift apart: the elapsed time is
rank 0's, broadcast to the others at each step (one scalar; the gradients' all-reduce is far larger).
"""

from __future__ import annotations

import math
import time

import torch
import torch.distributed as dist
from torch.optim.lr_scheduler import LRScheduler


def rank_zero_value(value: float) -> float:
    """``value`` as rank 0 has it, on every process of an initialised process group (else ``value``)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(tensor, src=0)
    return float(tensor.item())


class BudgetLR(LRScheduler):
    """``lr = base_lr * (min_lr_ratio + (1 - min_lr_ratio) * decay(progress))`` after a linear warm-up, over the
    run's budget; subclasses give ``decay`` (1 at the start, 0 at the end).

    Args:
        optimizer: the wrapped optimizer.
        total_steps: optimizer steps in the whole run (``None``: time alone decides).
        max_seconds: wall-time budget of the run (``None``: steps alone decide).
        warmup_steps: steps of linear warm-up from 0.
        min_lr_ratio: the floor, as a share of the base learning rate.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int | None = None,
        max_seconds: float | None = None,
        warmup_steps: int = 0,
        min_lr_ratio: float = 0.0,
    ) -> None:
        if not total_steps and not max_seconds:
            raise ValueError(f"{type(self).__name__} needs a budget: total_steps and/or max_seconds")
        self.total_steps, self.max_seconds = total_steps, max_seconds
        self.warmup_steps, self.min_lr_ratio = warmup_steps, min_lr_ratio
        self.elapsed_before = 0.0  # wall time of earlier sessions of a resumed run
        self._started = time.monotonic()
        super().__init__(optimizer)

    def elapsed(self) -> float:
        """Wall seconds of training so far, across resumes (this process's clock)."""
        return self.elapsed_before + time.monotonic() - self._started

    def progress(self) -> float:
        """Share of the budget used, in [0, 1]; under DDP rank 0's, so every replica sets the same rate."""
        by_steps = self.last_epoch / self.total_steps if self.total_steps else 0.0
        by_time = rank_zero_value(self.elapsed()) / self.max_seconds if self.max_seconds else 0.0
        return min(1.0, max(by_steps, by_time))

    def decay(self, progress: float) -> float:
        """The schedule's shape: 1 at progress 0, 0 at progress 1."""
        raise NotImplementedError

    def get_lr(self) -> list[float]:
        """The learning rate of each parameter group at the current step."""
        factor = self.decay(self.progress())
        if self.warmup_steps and self.last_epoch < self.warmup_steps:
            factor *= (self.last_epoch + 1) / self.warmup_steps
        factor = self.min_lr_ratio + (1.0 - self.min_lr_ratio) * factor
        return [base * factor for base in self.base_lrs]

    def state_dict(self) -> dict:
        """Scheduler state, with the wall time used so far (a resumed run continues the same decay)."""
        state = super().state_dict()
        state["elapsed_before"] = self.elapsed()
        state.pop("_started", None)
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the state; the clock restarts from the saved elapsed time."""
        super().load_state_dict(state_dict)
        self._started = time.monotonic()


class PolyLR(BudgetLR):
    """Polynomial decay ``(1 - progress) ** power`` over the budget (``power`` 0.9 as in DeepLab and nnU-Net)."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_steps: int | None = None,
                 max_seconds: float | None = None, power: float = 0.9, warmup_steps: int = 0,
                 min_lr_ratio: float = 0.0) -> None:  # fmt: skip
        self.power = power
        super().__init__(optimizer, total_steps, max_seconds, warmup_steps, min_lr_ratio)

    def decay(self, progress: float) -> float:
        """``(1 - progress) ** power``."""
        return (1.0 - progress) ** self.power


class CosineLR(BudgetLR):
    """Cosine decay ``(1 + cos(pi * progress)) / 2`` over the budget (SGDR without restarts)."""

    def decay(self, progress: float) -> float:
        """``(1 + cos(pi * progress)) / 2``."""
        return 0.5 * (1.0 + math.cos(math.pi * progress))
