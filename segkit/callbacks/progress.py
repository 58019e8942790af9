"""Progress that reads well in a terminal and in a log file (CI, SLURM, ``nohup``, ``| tee``)."""

from __future__ import annotations

import logging
import sys
import time
from datetime import timedelta

import pytorch_lightning as pl
from pytorch_lightning.callbacks import RichProgressBar, Timer
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger(__name__)


def terminal_progress_bar() -> RichProgressBar | None:
    """Lightning's rich bar when the output is a terminal, else ``None`` (a bar redrawn in a file is noise)."""
    return RichProgressBar() if sys.stdout.isatty() else None


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class LogProgress(pl.Callback):
    """Logs one line at most every ``every_seconds`` while training, plus one per finished validation.

    ``epoch 3/24 | step 150/1600 (9%) | 5.2 it/s | train/loss 0.412 | val/miou 0.811 | 0:00:29 elapsed, ETA 0:04:40``

    or, when ``max_time`` ends the run before the step budget (``max_epochs`` / ``max_steps``) would,

    ``epoch 3 | step 150 | 5.2 it/s | ... | 0:01:00 elapsed (20% of the 0:05:00 budget), ETA 0:04:00``

    The lines go through ``logging``, so they land in the run's ``train.log`` and on the console.

    Args:
        every_seconds: minimum time between two training lines.
        metrics: logged values to show (those that exist yet).
    """

    def __init__(
        self, every_seconds: float = 30.0, metrics: tuple[str, ...] = ("train/loss", "val/loss", "val/miou")
    ) -> None:
        self.every_seconds = every_seconds
        self.metrics = list(metrics)
        self._start = self._last = 0.0
        self._start_step = 0

    @rank_zero_only
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Start the clocks (a resumed run counts its speed from the resume)."""
        self._start = self._last = time.monotonic()
        self._start_step = trainer.global_step

    @rank_zero_only
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        """Log a line when ``every_seconds`` have passed since the last one."""
        now = time.monotonic()
        if now - self._last >= self.every_seconds:
            self._last = now
            log.info(self.line(trainer))

    @rank_zero_only
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Log the scores of every in-training validation."""
        if not trainer.sanity_checking and trainer.state.fn == TrainerFn.FITTING:
            log.info(self.line(trainer, "validated"))

    def line(self, trainer: pl.Trainer, prefix: str = "") -> str:
        """The progress line for the trainer's current state: against the step budget, or, when ``max_time``
        ends the run first, against the time budget (a step count out of 100000 epochs would mean nothing)."""
        elapsed = time.monotonic() - self._start
        done = trainer.global_step - self._start_step
        rate = done / elapsed if elapsed > 0 else 0.0
        total = trainer.estimated_stepping_batches
        finite = total not in (None, float("inf")) and total > 0
        steps_left = (total - trainer.global_step) / rate if finite and rate > 0 else None
        timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)  # present with max_time
        time_left = timer.time_remaining() if timer is not None else None
        by_time = time_left is not None and (steps_left is None or time_left < steps_left)  # no rate yet: the clock
        parts = [prefix] if prefix else []
        max_epochs = trainer.max_epochs if trainer.max_epochs is not None and trainer.max_epochs >= 0 else None
        # Counted from 0 like Lightning's progress bar, checkpoints and the pictures (epoch_000.png)
        parts.append(f"epoch {trainer.current_epoch}" + (f"/{max_epochs - 1}" if max_epochs and not by_time else ""))
        step = f"step {trainer.global_step}"
        parts.append(
            f"{step}/{int(total)} ({100 * trainer.global_step / total:.0f}%)" if finite and not by_time else step
        )
        parts.append(f"{rate:.2f} it/s")
        for name in self.metrics:
            value = trainer.callback_metrics.get(name, trainer.callback_metrics.get(f"{name}_step"))
            if value is not None:
                parts.append(f"{name} {float(value):.4f}")
        if by_time:
            spent = timer.time_elapsed("train")
            budget = spent + time_left  # the configured max_time (past it, the share exceeds 100%)
            share = f" ({100 * spent / budget:.0f}% of the {_duration(budget)} budget)" if budget > 0 else ""
            parts.append(f"{_duration(elapsed)} elapsed{share}, ETA {_duration(max(0.0, time_left))}")
            return " | ".join(parts)
        remaining = [steps_left] if steps_left is not None else []
        if time_left is not None:
            remaining.append(time_left)
        eta = f", ETA {_duration(max(0.0, min(remaining)))}" if remaining else ""  # 0 once the clock is past
        parts.append(f"{_duration(elapsed)} elapsed{eta}")
        return " | ".join(parts)
