"""ClassificationTask: cross-entropy, accuracy/F1/recall and a confusion-matrix picture around an injected net."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassF1Score,
    MulticlassRecall,
)

from segkit.callbacks.predictions import picture_label
from segkit.tasks.base import OptimizerFactory, SchedulerFactory, Task
from segkit.visualize import save_confusion_matrix


class ClassificationTask(Task):
    """Trains ``net`` (images ``(B, C, H, W)`` -> logits ``(B, K)``) on ``{"image", "label"}`` batches.

    Logs ``train/loss``, ``val/loss``, ``val/acc``, ``val/acc_top<k>`` (when ``top_k < num_classes``),
    ``val/f1`` (macro) and ``val/recall_<class>`` (same for ``test/``), and saves
    ``<run dir>/confusion/epoch_NNN.png`` after every validation epoch (rank 0).

    Args:
        net: the classifier.
        optimizer: factory taking ``params=`` (a Hydra ``_partial_`` node).
        num_classes: number of classes.
        class_names: names used in metric keys and the confusion matrix.
        label_smoothing: cross-entropy label smoothing.
        class_weights: per-class loss weights (for imbalanced data); ``None`` = equal.
        top_k: also log top-k accuracy when ``top_k < num_classes``.
        scheduler: optional factory taking ``optimizer=``.
        scheduler_interval: ``"epoch"`` or ``"step"``.
        channels_last: run the network in channels-last memory format.
        compile: run the network through ``torch.compile`` (the first steps are slow while it compiles).
        encoder_lr_mult: learning rate of ``net.encoder`` relative to the head.
        decay_norms_and_biases: also apply the optimizer's weight decay to norms and biases (by default
            they are left undecayed, as timm and nanoGPT do: :func:`segkit.tasks.base.param_groups`).
        loss: a loss ``loss(logits, labels)`` to use instead of the built-in cross-entropy.
    """

    task_name = "classification"

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        label_smoothing: float = 0.0,
        class_weights: Sequence[float] | None = None,
        top_k: int = 5,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
        channels_last: bool = False,
        encoder_lr_mult: float = 1.0,
        decay_norms_and_biases: bool = False,
        compile: bool = False,
        loss: nn.Module | None = None,
    ) -> None:
        super().__init__(net, optimizer, scheduler, num_classes, class_names, channels_last, compile,
                         scheduler_interval, encoder_lr_mult, decay_norms_and_biases)  # fmt: skip
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "loss"])
        if class_weights is not None and len(class_weights) != num_classes:
            raise ValueError(f"class_weights has {len(class_weights)} values but num_classes is {num_classes}")
        weight = torch.tensor(class_weights, dtype=torch.float32) if class_weights is not None else None
        self.loss = loss if loss is not None else nn.CrossEntropyLoss(weight=weight, label_smoothing=label_smoothing)
        self.metrics = nn.ModuleDict({split: self._make_metrics(num_classes, top_k) for split in ("val", "test")})

    @staticmethod
    def _make_metrics(num_classes: int, top_k: int) -> nn.ModuleDict:
        metrics = {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
            "recall": MulticlassRecall(num_classes, average="none"),
            "confmat": MulticlassConfusionMatrix(num_classes, validate_args=False),
        }
        if top_k < num_classes:
            metrics[f"acc_top{top_k}"] = MulticlassAccuracy(num_classes, top_k=top_k, average="micro")
        return nn.ModuleDict(metrics)

    def _shared_step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        logits, labels = self(batch["image"]).float(), batch["label"]  # (B, K), (B,)
        if "is_pad" in batch:  # distributed evaluation: padding repeats count for nothing
            logits, labels = logits[~batch["is_pad"]], labels[~batch["is_pad"]]
        loss = self.loss(logits, labels) if len(labels) else logits.sum() * 0.0
        self.log(f"{split}/loss", loss, on_step=split == "train", on_epoch=True, prog_bar=True,
                 batch_size=len(labels), sync_dist=split != "train")  # fmt: skip
        if split in self.metrics and len(labels):
            for metric in self.metrics[split].values():
                metric.update(logits, labels)
        return loss

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Class probabilities ``(B, K)``."""
        return self(batch["image"]).softmax(dim=1)

    def _log_epoch(self, split: str) -> None:
        values = {name: metric.compute() for name, metric in self.metrics[split].items()}  # synced by torchmetrics
        for metric in self.metrics[split].values():
            metric.reset()
        support = values["confmat"].sum(dim=1)  # the split's images of each class
        for name, value in values.items():
            if name == "recall":  # a class the split holds no image of has no recall (torchmetrics says 0)
                self.log_dict({f"{split}/recall_{c}": v for c, v, n in zip(self.class_names, value, support,
                                                                           strict=True) if n > 0})  # fmt: skip
            elif name == "confmat":
                self._save_confusion(value.cpu().numpy(), split)
            else:
                self.log(f"{split}/{name}", value, prog_bar=name == "acc")

    def _save_confusion(self, confmat, split: str) -> None:
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            name, title = picture_label(self.trainer)
            path = Path(self.trainer.default_root_dir) / "confusion" / f"{split}_{name}.png"
            save_confusion_matrix(confmat, self.class_names, path, title=f"{split}, {title}")
