"""PredictionGrid: a PNG of image | ground truth | prediction | errors for fixed validation samples, every epoch."""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.trainer.states import TrainerFn
from pytorch_lightning.utilities import rank_zero_only

from segkit.callbacks.last_checkpoint import LastCheckpoint, monitoring_checkpoint
from segkit.metrics.binary import two_class_logits
from segkit.visualize import denormalize, save_prediction_grid


def picture_label(trainer: pl.Trainer) -> tuple[str, str]:
    """File stem and title for a picture of the current evaluation.

    While fitting: ``epoch_007`` / ``epoch 7``. Afterwards (the final validation or a test), pictures are named
    after the weights evaluated: ``final`` (the model in memory or ``last.ckpt``), ``best`` for the best
    checkpoint, else the checkpoint's name, because the trainer's epoch counter then says where training
    stopped, not which weights are shown.
    """
    if trainer.state.fn == TrainerFn.FITTING:
        return f"epoch_{trainer.current_epoch:03d}", f"epoch {trainer.current_epoch}"
    ckpt = trainer.ckpt_path
    lasts = [c.last_model_path for c in trainer.callbacks if isinstance(c, LastCheckpoint) and c.last_model_path]
    if not ckpt or any(Path(last).resolve() == Path(ckpt).resolve() for last in lasts):
        return "final", "final weights"
    monitor = monitoring_checkpoint(trainer)
    best = monitor.best_model_path if monitor is not None else ""
    name = "best" if best and Path(best).resolve() == Path(ckpt).resolve() else Path(ckpt).stem
    return name, f"{name} checkpoint ({Path(ckpt).name})"


class PredictionGrid(pl.Callback):
    """Saves ``<dirpath>/epoch_<N>.png`` with the first ``num_samples`` validation samples.

    The samples are the same every time, so the files show the model learning. The final validation of the
    best checkpoint always writes ``best.png``. Samples may differ in size (whole validation images): each is
    predicted on its own. Only rank 0 writes.

    Args:
        dirpath: output folder; default ``<trainer.default_root_dir>/predictions``.
        num_samples: rows in the grid.
        every_n_validations: draw at every N-th in-training validation (a grid costs a forward pass and a
            PNG: with frequent validation, draw less often).
    """

    def __init__(self, dirpath: str | None = None, num_samples: int = 4, every_n_validations: int = 1) -> None:
        self.dirpath = dirpath
        self.num_samples = num_samples
        self.every_n_validations = every_n_validations
        self.validations = 0
        self.saved: list[Path] = []

    @rank_zero_only
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Predict the fixed samples and write the grid."""
        if trainer.sanity_checking or not hasattr(pl_module, "validation_logits"):  # segmentation tasks only
            return
        if trainer.state.fn == TrainerFn.FITTING:
            self.validations += 1
            if (self.validations - 1) % self.every_n_validations:
                return
        datamodule = trainer.datamodule
        dataset = datamodule.val_set
        samples = [dataset[i] for i in range(min(self.num_samples, len(dataset)))]
        was_training = pl_module.training
        pl_module.eval()
        preds = []
        # as validation scored them (every pixel, large images tiled), in the trainer's precision
        with torch.no_grad(), trainer.precision_plugin.forward_context():
            for sample in samples:
                logits, _ = pl_module.validation_logits(sample["image"].unsqueeze(0).to(pl_module.device))
                preds.append(two_class_logits(logits).argmax(dim=1)[0].cpu().numpy())
        pl_module.train(was_training)
        name, title = picture_label(trainer)
        dirpath = Path(self.dirpath or Path(trainer.default_root_dir) / "predictions")
        path = save_prediction_grid(
            [denormalize(s["image"], *datamodule.display_stats) for s in samples],
            [s["mask"].numpy() for s in samples],
            preds,
            dirpath / f"{name}.png",
            num_classes=datamodule.num_classes,
            ignore_index=datamodule.ignore_index,
            title=title,
            class_names=getattr(datamodule, "class_names", None),
        )
        self.saved.append(path)
