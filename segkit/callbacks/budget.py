"""StopAtBudget: the clock is also read when a validation ends, so a run past its budget trains no further."""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Timer
from pytorch_lightning.trainer.states import TrainerFn


class StopAtBudget(pl.Callback):
    """Stop a fit whose ``trainer.max_time`` ran out during a validation, when that validation ends.

    Lightning's Timer reads the clock after training steps only. When a validation ended past the budget, the
    next epoch trained one more step, and Lightning validated again because it was stopping, before segkit's
    final validation scored those weights once more: in a 2-minute planned run on 1.8 Mpx images the extra
    step and validation took 11 s. Without ``max_time`` this does nothing.
    """

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        remaining = timer.time_remaining() if timer is not None else None
        if remaining is not None and trainer.strategy.broadcast(remaining <= 0):
            trainer.should_stop = True
