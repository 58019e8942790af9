"""CheckpointOnSigterm: write ``last.ckpt`` when the job is told to stop (SLURM preemption, ``kill``)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

log = logging.getLogger(__name__)


class CheckpointOnSigterm(pl.Callback):
    """Saves a checkpoint when Lightning stops training because of SIGTERM.

    Lightning turns SIGTERM into a ``SIGTERMException`` after the current batch (on every rank at once under
    DDP); this callback then saves the full training state, so ``ckpt_path=last`` resumes from that very step.

    Args:
        dirpath: folder for the checkpoint (default ``<trainer.default_root_dir>/checkpoints``).
        filename: checkpoint file name.
    """

    def __init__(self, dirpath: str | None = None, filename: str = "last.ckpt") -> None:
        self.dirpath = dirpath
        self.filename = filename

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """Save the state if the exception is Lightning's SIGTERM stop."""
        if not isinstance(exception, SIGTERMException):
            return
        path = Path(self.dirpath or Path(trainer.default_root_dir) / "checkpoints") / self.filename
        trainer.save_checkpoint(path)  # rank 0 writes; written atomically by segkit's checkpoint IO
        log.warning("SIGTERM received: saved %s at global step %d", path, trainer.global_step)
