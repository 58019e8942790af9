"""LastCheckpoint: ``last.ckpt`` always holds the newest weights, however the run stopped.

Lightning's ``ModelCheckpoint(save_last=True)`` refreshes ``last.ckpt`` after a validation only when the
monitored metric improved, and at the end of training only if it never wrote one. A run stopped by
``max_time`` therefore kept the weights of the last improvement or of the last 100-step save, and the final
weights (the ones an annealed schedule was aiming at) existed nowhere.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint

log = logging.getLogger(__name__)


class LastCheckpoint(ModelCheckpoint):
    """Writes ``<dirpath>/last.ckpt`` every ``every_n_train_steps`` steps, after every validation while
    fitting, and when training ends (``max_epochs``, ``max_steps``, ``max_time``, early stopping).

    A SIGTERM stop is :class:`segkit.callbacks.CheckpointOnSigterm`'s. Nothing is written twice for the
    same global step, and nothing under ``fast_dev_run``. It keeps no top-k files: the best checkpoint is the
    monitoring ``ModelCheckpoint``'s job.

    Args:
        dirpath: the checkpoint folder.
        every_n_train_steps: also save mid-epoch every N optimizer steps (``None`` or 0: only at validations
            and at the end), so a crash loses at most N steps.
        train_time_interval: or save every so much wall time (a ``timedelta``; with ``every_n_train_steps=null``).
    """

    def __init__(
        self,
        dirpath: str | None = None,
        every_n_train_steps: int | None = 100,
        train_time_interval: timedelta | None = None,
    ) -> None:
        super().__init__(
            dirpath=dirpath,
            save_top_k=0,
            save_last=True,
            every_n_train_steps=every_n_train_steps or 0,
            train_time_interval=train_time_interval,
            enable_version_counter=False,
        )

    def _save_now(self, trainer: pl.Trainer) -> None:
        if self._should_skip_saving_checkpoint(trainer):
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Refresh ``last.ckpt`` after every validation of the fit (never during the sanity check)."""
        self._save_now(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Nothing: validations and the end of training save."""

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Save the final weights unless this very step was saved already."""
        self._save_now(trainer)
        if self.last_model_path:
            log.info("Final weights (global step %d): %s", trainer.global_step, self.last_model_path)


def monitoring_checkpoint(trainer: pl.Trainer) -> ModelCheckpoint | None:
    """The trainer's monitoring ``ModelCheckpoint`` (the one that keeps the best checkpoint), if any."""
    monitors = (c for c in trainer.callbacks if isinstance(c, ModelCheckpoint) and not isinstance(c, LastCheckpoint))
    return next(monitors, None)
