"""PredictionGrid: a PNG of image | ground truth | prediction for a fixed validation batch, every epoch."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from segkit.visualize import denormalize, save_prediction_grid


class PredictionGrid(pl.Callback):
    """Saves ``<dirpath>/epoch_<N>.png`` with the first ``num_samples`` validation samples.

    The samples are the same every epoch, so the files show the model learning. Only rank 0 writes.

    Args:
        dirpath: output folder; default ``<trainer.default_root_dir>/predictions``.
        num_samples: rows in the grid.
        every_n_epochs: save every N validation epochs.
    """

    def __init__(self, dirpath: str | None = None, num_samples: int = 4, every_n_epochs: int = 1) -> None:
        self.dirpath = dirpath
        self.num_samples = num_samples
        self.every_n_epochs = every_n_epochs
        self.saved: list[Path] = []

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Predict the fixed samples and write the grid."""
        if trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs:
            return
        datamodule = trainer.datamodule
        dataset = datamodule.val_set
        samples = [dataset[i] for i in range(min(self.num_samples, len(dataset)))]
        images = torch.stack([s["image"] for s in samples]).to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            out = pl_module(images)
            preds = (out[0] if isinstance(out, tuple) else out).argmax(dim=1).cpu().numpy()
        pl_module.train(was_training)
        dirpath = Path(self.dirpath or Path(trainer.default_root_dir) / "predictions")
        path = save_prediction_grid(
            [denormalize(s["image"], datamodule.mean, datamodule.std) for s in samples],
            [s["mask"].numpy() for s in samples],
            list(preds),
            dirpath / f"epoch_{trainer.current_epoch:03d}.png",
            num_classes=datamodule.num_classes,
            ignore_index=datamodule.ignore_index,
            title=f"epoch {trainer.current_epoch}",
        )
        self.saved.append(path)
