"""MetricCurves: keeps the per-epoch history of chosen metrics and plots it to a PNG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only

from segkit.visualize import save_curves


class MetricCurves(pl.Callback):
    """Writes ``<dirpath>/curves.png`` after every training epoch (rank 0 only).

    Args:
        metrics: logged keys to plot (missing keys are skipped).
        dirpath: output folder; default ``trainer.default_root_dir``.
    """

    def __init__(
        self,
        metrics: Sequence[str] = ("train/loss_epoch", "val/loss", "val/miou"),
        dirpath: str | None = None,
    ) -> None:
        self.metrics = list(metrics)
        self.dirpath = dirpath
        self.history: dict[str, list[tuple[int, float]]] = {m: [] for m in self.metrics}

    @rank_zero_only
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Record this epoch's values (train and the validation that ran in it) and redraw the figure."""
        for name in self.metrics:
            value = trainer.callback_metrics.get(name)
            if value is not None:
                self.history[name].append((trainer.current_epoch, float(value)))
        save_curves(self.history, Path(self.dirpath or trainer.default_root_dir) / "curves.png")

    def state_dict(self) -> dict:
        """Keep the history across a resume."""
        return {"history": self.history}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the history saved in a checkpoint."""
        self.history = {k: [tuple(p) for p in v] for k, v in state_dict["history"].items()}
