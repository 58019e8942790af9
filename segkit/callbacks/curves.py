"""MetricCurves: keeps the per-epoch history of chosen metrics and plots it to a PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from segkit.visualize import save_curves


class MetricCurves(pl.Callback):
    """Records chosen metrics every epoch and draws ``<dirpath>/curves.png`` every N epochs and at the end.

    Recording is free; drawing a figure costs tens of milliseconds, which adds up with short epochs.
    Only rank 0 draws.

    Args:
        metrics: logged keys to plot (missing keys are skipped).
        dirpath: output folder; default ``trainer.default_root_dir``.
        every_n_epochs: redraw every N epochs (and always when training ends).
    """

    def __init__(
        self,
        metrics: Sequence[str] = ("train/loss_epoch", "val/loss", "val/miou"),
        dirpath: str | None = None,
        every_n_epochs: int = 1,
    ) -> None:
        self.metrics = list(metrics)
        self.dirpath = dirpath
        self.every_n_epochs = every_n_epochs
        self.history: dict[str, list[tuple[int, float]]] = {m: [] for m in self.metrics}
        self.drawn = 0

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Record this epoch's values (train and the validation that ran in it); redraw every N epochs."""
        for name in self.metrics:
            value = trainer.callback_metrics.get(name)
            if value is not None:
                self.history[name].append((trainer.current_epoch, float(value)))
        if trainer.current_epoch % self.every_n_epochs == 0:
            self.draw(trainer)

    @rank_zero_only
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """The final figure, whatever the cadence."""
        self.draw(trainer)

    def draw(self, trainer: pl.Trainer) -> None:
        """Write the figure now."""
        save_curves(self.history, Path(self.dirpath or trainer.default_root_dir) / "curves.png")
        self.drawn += 1

    def state_dict(self) -> dict:
        """Keep the history across a resume."""
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the history saved in a checkpoint."""
        self.history = {k: [tuple(p) for p in v] for k, v in state_dict["history"].items()}
