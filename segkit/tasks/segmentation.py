"""SegmentationTask: loss, metrics and optimisation around an injected segmentation network."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix, MultilabelF1Score

from segkit.binary import two_class_logits
from segkit.image_metrics import ImageMetricMean
from segkit.metrics import segmentation_scores
from segkit.models.unet import center_crop
from segkit.sliding_window import mirror_pad_for_valid
from segkit.tasks.base import OptimizerFactory, SchedulerFactory, Task


def class_presence(mask: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Image-level multi-hot targets ``(B, num_classes)``: 1 where class ``k < num_classes`` occurs in the mask."""
    valid = (mask != ignore_index) & (mask < num_classes)
    safe = torch.where(valid, mask, torch.zeros_like(mask))
    one_hot = F.one_hot(safe, num_classes) * valid.unsqueeze(-1)  # (B, H, W, K)
    return one_hot.flatten(1, 2).amax(dim=1)


def deep_supervision_loss(
    loss_fn: nn.Module, finest: torch.Tensor, coarse: list[torch.Tensor], mask: torch.Tensor, batch_size: int
) -> torch.Tensor:
    """nnU-Net's deep supervision: weights 1, 1/2, 1/4, ... from the finest level down, normalised to sum 1;
    each coarser level is scored against the mask downsampled by nearest neighbour (ignore values survive)."""
    weights = [0.5**level for level in range(len(coarse) + 1)]
    total = finest * weights[0]
    for weight, logits in zip(weights[1:], coarse, strict=True):
        if batch_size:
            target = F.interpolate(mask[:, None].float(), size=logits.shape[-2:], mode="nearest")[:, 0].long()
            total = total + weight * loss_fn(logits, target)
        else:
            total = total + logits.sum() * 0.0  # every head takes part, so DDP sees no unused parameters
    return total / sum(weights)


class SegmentationTask(Task):
    """Trains ``net`` (images ``(B, C, H, W)`` -> logits ``(B, K, H', W')``) on ``{"image", "mask"}`` batches.

    Logs ``train/loss``, ``val/loss``, ``val/miou``, ``val/dice``, ``val/acc``, ``val/pixel_error`` and
    ``val/{iou,dice,precision,recall}_<class>`` (same for ``test/``). Scores come from one confusion matrix
    accumulated over the epoch (a torchmetrics state, so it is summed across processes under DDP); the
    per-image ``image_metrics`` are means over images, exact under DDP too (:mod:`segkit.image_metrics`).

    A network with one output channel is trained and scored in binary mode (:mod:`segkit.binary`): its
    sigmoid is read as classes ``[0, 1]`` with ``num_classes=2`` names, thresholded at 0.5.

    Args:
        net: the segmentation network.
        loss: callable ``loss(logits, mask) -> scalar``.
        optimizer: factory taking ``params=`` (a Hydra ``_partial_`` node).
        num_classes: number of classes, background included.
        class_names: names used in metric keys; default ``class_<i>``.
        ignore_index: mask value left out of the metrics.
        scheduler: optional factory taking ``optimizer=``.
        scheduler_interval: ``"epoch"`` or ``"step"``: when the scheduler steps.
        channels_last: run the network in channels-last memory format (faster on CPU with bf16 and on GPUs).
        compile: run the network through ``torch.compile`` (the first steps are slow while it compiles).
        encoder_lr_mult: learning rate of ``net.encoder`` relative to the rest (e.g. 0.1 for pretrained encoders).
        image_metrics: per-image scores logged at validation and test: ``"adapted_rand_error"`` (cells
            separated by ``foreground_class``, e.g. EM membranes) and/or ``"hd95"`` (of ``foreground_class``).
        foreground_class: the class the image metrics are about.
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        optimizer: OptimizerFactory,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int = 255,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "epoch",
        channels_last: bool = False,
        encoder_lr_mult: float = 1.0,
        compile: bool = False,
        image_metrics: Sequence[str] = (),
        foreground_class: int = 1,
    ) -> None:
        if loss is None:
            raise ValueError(
                "SegmentationTask needs a loss; pick one from the loss group: loss=dice_ce, loss=ce, loss=dice or "
                "loss=bce (loss=none is for tasks with a built-in loss, such as classification)"
            )
        super().__init__(net, optimizer, scheduler, num_classes, class_names, channels_last, compile)
        # Factories and modules stay out of the checkpoint's hparams: they are not plain data and would need
        # unpickling of arbitrary objects; the run's .hydra/config.yaml describes them instead.
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler"])
        self.loss = loss
        # validate_args=False: no per-step checks (and host syncs); masks were checked when the data was read
        self.confmat = nn.ModuleDict(
            {
                split: MulticlassConfusionMatrix(num_classes, ignore_index=ignore_index, validate_args=False)
                for split in ("val", "test")
            }
        )
        self.image_metrics = nn.ModuleDict(
            {
                split: nn.ModuleDict(
                    {name: ImageMetricMean(name, foreground_class, ignore_index) for name in image_metrics}
                )
                for split in ("val", "test")
            }
        )
        aux_head = getattr(net, "aux_head", None)
        aux_classes = aux_head.fc.out_features if aux_head else 0
        self.aux_f1 = nn.ModuleDict(
            {split: MultilabelF1Score(aux_classes, validate_args=False) for split in ("val", "test")}
            if aux_head
            else {}
        )
        self._has_batchnorm = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules())

    def _shared_step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        image, mask = batch["image"], batch["mask"]
        if split == "train" and image.shape[0] == 1 and self._has_batchnorm:
            raise ValueError(
                "training with batch size 1 and BatchNorm gives meaningless batch statistics; "
                "raise data.batch_size or use model.norm=group"
            )
        weight = batch.get("weight")  # per-pixel loss weights (the U-Net paper's border weight maps)
        whole_image = split != "train" and getattr(self.net, "padding", "same") == "valid"
        out = self(mirror_pad_for_valid(self.net, image) if whole_image else image)
        logits, class_logits = out if isinstance(out, tuple) else (out, None)  # (B, K, H', W'), (B, K_aux)
        logits, coarse = (logits[0], logits[1:]) if isinstance(logits, list) else (logits, [])  # deep supervision
        if whole_image:  # overlap-tile with mirrored borders: scored on the whole image, as segkit.eval does
            logits = logits[..., : mask.shape[-2], : mask.shape[-1]]
        if "is_pad" in batch:  # distributed evaluation: every rank ran the same batches, padding counts for nothing
            keep = ~batch["is_pad"]
            logits, mask = logits[keep], mask[keep]
            weight = weight[keep] if weight is not None else None
            class_logits = class_logits[keep] if class_logits is not None else None
            batch = {**batch, **({"labels": batch["labels"][keep]} if "labels" in batch else {})}
        batch_size = logits.shape[0]
        full_mask = mask
        if logits.shape[-2:] != mask.shape[-2:]:
            mask = center_crop(mask, logits.shape[-2:])  # valid-padding U-Nets predict the centre only
            weight = center_crop(weight, logits.shape[-2:]) if weight is not None else None
        # A rank whose batch is all padding logs a zero weighted by batch size 0: the epoch mean stays exact.
        weighted = getattr(self.loss, "uses_weight_map", False)
        if weight is not None and not weighted:
            raise ValueError(
                f"the training samples carry weight maps (data.train_dataset.weight_map) but the loss "
                f"{type(self.loss).__name__} does not use them; set loss=weight_map_ce or drop the weight map"
            )
        if weighted and coarse:
            raise ValueError("weight-map losses do not support deep supervision; set model.deep_supervision=0")
        extra = {"weight": weight} if weighted else {}
        loss = self.loss(logits, mask, **extra) if batch_size else logits.sum() * 0.0
        if coarse:
            loss = deep_supervision_loss(self.loss, loss, coarse, mask, batch_size)
        if class_logits is not None:
            # The aux head always takes part in the loss, so DDP never sees unused parameters.
            targets = (
                batch["labels"]
                if "labels" in batch
                else class_presence(full_mask, class_logits.shape[1], self.hparams.ignore_index)
            )
            aux_loss = (
                F.binary_cross_entropy_with_logits(class_logits.float(), targets.float())
                if batch_size
                else class_logits.sum() * 0.0
            )
            self.log(f"{split}/aux_loss", aux_loss, on_epoch=True, batch_size=batch_size, sync_dist=split != "train")
            loss = loss + self.net.aux_loss_weight * aux_loss
            if split in self.aux_f1 and batch_size:
                self.aux_f1[split].update(class_logits, targets.long())
        self.log(
            f"{split}/loss",
            loss,
            on_step=split == "train",
            on_epoch=True,
            prog_bar=True,
            batch_size=batch_size,
            sync_dist=split != "train",
        )
        if split in self.confmat and batch_size:
            pred = two_class_logits(logits).argmax(dim=1)  # binary mode: sigmoid > 0.5 is class 1
            self.confmat[split].update(pred, mask)
            for metric in self.image_metrics[split].values():
                metric.update(pred, mask)
        return loss

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Per-pixel class indices ``(B, H', W')``."""
        out = self(batch["image"])
        return two_class_logits(out[0] if isinstance(out, tuple) else out).argmax(dim=1)

    def _log_epoch(self, split: str) -> None:
        confmat = self.confmat[split].compute()  # synced across processes by torchmetrics
        self.confmat[split].reset()
        scores = segmentation_scores(confmat, self.class_names, split)
        miou = scores.pop(f"{split}/miou")
        self.log_dict(scores)
        self.log(f"{split}/miou", miou, prog_bar=True)
        for name, metric in self.image_metrics[split].items():
            self.log(f"{split}/{name}", metric.compute().float())  # summed over processes by torchmetrics
            metric.reset()
        if split in self.aux_f1:
            self.log(f"{split}/aux_f1", self.aux_f1[split].compute())
            self.aux_f1[split].reset()
