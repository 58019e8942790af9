"""SegmentationTask: loss, metrics and optimisation around an injected segmentation network."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassConfusionMatrix, MultilabelF1Score

from segkit.inference.model_files import precision_name, training_patch
from segkit.inference.sliding_window import (
    TTA_MODES,
    WHOLE_IMAGE_PIXELS,
    SlidingWindow,
    default_tile,
    mirror_pad_for_valid,
)
from segkit.metrics import segmentation_scores
from segkit.metrics.binary import two_class_logits
from segkit.metrics.per_image import ImageMetricMean
from segkit.models.unet import center_crop
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


@dataclass
class StepOutput:
    """What one step's forward pass gives, with the targets of the samples that count."""

    logits: torch.Tensor  # (B, K, H', W')
    coarse: list[torch.Tensor]  # deep-supervision logits, coarsest last
    class_logits: torch.Tensor | None  # (B, K_aux) of the auxiliary head
    mask: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.logits.shape[0]


class SegmentationTask(Task):
    """Trains ``net`` (images ``(B, C, H, W)`` -> logits ``(B, K, H', W')``) on ``{"image", "mask"}`` batches.

    Logs ``train/loss``, ``val/loss``, ``val/miou``, ``val/dice``, ``val/acc``, ``val/pixel_error`` and
    ``val/{iou,dice,precision,recall}_<class>`` (same for ``test/``). Scores come from one confusion matrix
    accumulated over the epoch (a torchmetrics state, so it is summed across processes under DDP); the
    per-image ``image_metrics`` are means over images, exact under DDP too (:mod:`segkit.metrics.per_image`).

    A network with one output channel is trained and scored in binary mode (:mod:`segkit.metrics.binary`): its
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
        channels_last: run the network in channels-last memory format (faster on GPUs and CPUs, bf16 or fp32).
        compile: run the network through ``torch.compile`` (the first steps are slow while it compiles).
        encoder_lr_mult: learning rate of ``net.encoder`` relative to the rest (e.g. 0.1 for pretrained encoders).
        decay_norms_and_biases: also apply the optimizer's weight decay to norms and biases (by default
            they are left undecayed, as timm and nanoGPT do: :func:`segkit.tasks.base.param_groups`).
        image_metrics: per-image scores logged at validation and test: ``"adapted_rand_error"`` (cells
            separated by ``foreground_class``, e.g. EM membranes) and/or ``"hd95"`` (of ``foreground_class``).
        foreground_class: the class the image metrics are about.
        tta: the test-time augmentation recorded for this model (``"hflip"``, ``"flips"``, ``"d4"``; ``None``:
            none): ``segkit.predict``, ``eval`` and ``serve`` use it unless told otherwise. The planner chooses
            it from the data's symmetry; validation during training does not use it.
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
        decay_norms_and_biases: bool = False,
        compile: bool = False,
        image_metrics: Sequence[str] = (),
        foreground_class: int = 1,
        tta: str | None = None,
    ) -> None:
        if tta not in TTA_MODES:
            raise ValueError(f"task.tta must be one of {[m for m in TTA_MODES if m]} or null, got {tta!r}")
        if loss is None:
            raise ValueError(
                "SegmentationTask needs a loss; pick one from the loss group: loss=dice_ce, loss=ce, loss=dice or "
                "loss=bce (loss=none is for tasks with a built-in loss, such as classification)"
            )
        super().__init__(net, optimizer, scheduler, num_classes, class_names, channels_last, compile,
                         scheduler_interval, encoder_lr_mult, decay_norms_and_biases)  # fmt: skip
        # Factories and modules stay out of the checkpoint's hparams: they are not plain data and would need
        # unpickling of arbitrary objects; the run's .hydra/config.yaml describes them instead.
        self.save_hyperparameters(ignore=["net", "loss", "optimizer", "scheduler"])
        self.loss = loss
        self.ignore_index = ignore_index
        self.foreground_class = foreground_class
        self.tta = tta
        self.image_metric_names = list(image_metrics)
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
        """One step, as a sequence: check inputs, forward, keep the real samples, align the targets with the
        logits, loss (with deep supervision and the auxiliary head), log, update the metrics."""
        self._check_batch(batch, split)
        out = self._forward_for(batch["image"], split)
        out = self._drop_padding(out, batch)
        mask, weight = self._targets_like(out.logits, out.mask, out.weight)
        loss = self._segmentation_loss(out, mask, weight)
        if out.class_logits is not None:
            loss = loss + self._aux_loss(out, split)
        self.log(f"{split}/loss", loss, on_step=split == "train", on_epoch=True, prog_bar=True,
                 batch_size=out.batch_size, sync_dist=split != "train")  # fmt: skip
        if split in self.confmat and out.batch_size:
            self._update_metrics(out.logits, mask, split)
        return loss

    def _check_batch(self, batch: dict[str, torch.Tensor], split: str) -> None:
        if split == "train" and batch["image"].shape[0] == 1 and self._has_batchnorm:
            datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
            train_set = getattr(datamodule, "train_set", None)
            if train_set is not None and len(train_set) == 1:
                raise ValueError(
                    "the training split holds 1 image, so every batch holds 1, and BatchNorm's statistics of one "
                    "image are meaningless: add training images (or lower data.val_fraction), or use model.norm=group"
                )
            raise ValueError(
                "a training batch holds 1 image, and BatchNorm's statistics of one image are meaningless; "
                "raise data.batch_size or use model.norm=group"
            )
        weighted = getattr(self.loss, "uses_weight_map", False)
        if batch.get("weight") is not None and not weighted:
            raise ValueError(
                f"the training samples carry weight maps (data.train_dataset.weight_map) but the loss "
                f"{type(self.loss).__name__} does not use them; set loss=weight_map_ce or drop the weight map"
            )
        if weighted and len(getattr(self.net, "deep_heads", ())):
            raise ValueError("weight-map losses do not support deep supervision; set model.deep_supervision=0")

    def _forward_for(self, image: torch.Tensor, split: str) -> StepOutput:
        """The network's outputs: for training, of the crop; for validation and test, as
        :meth:`validation_logits` gives them."""
        if split != "train":
            logits, class_logits = self.validation_logits(image)
            return StepOutput(logits, [], class_logits)
        out = self(image)
        logits, class_logits = out if isinstance(out, tuple) else (out, None)  # (B, K, H', W'), (B, K_aux)
        logits, coarse = (logits[0], logits[1:]) if isinstance(logits, list) else (logits, [])  # deep supervision
        return StepOutput(logits, coarse, class_logits)

    def validation_logits(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``(B, K, H, W)`` of whole validation images (and the auxiliary head's, or ``None``), as
        segkit.eval scores them.

        Images up to ``WHOLE_IMAGE_PIXELS`` (1 Mpx) are one tile; a valid-padding network sees them with
        mirrored borders (the paper's overlap-tile with one tile), cropped back to the image. Larger images go
        through eval's sliding window (the training crop, overlap 0.5, in the trainer's precision): as one
        tile, one 4000x3000 photo took 7.6 GB of memory with the 0.48 M-parameter U-Net on the CPU, and
        eval tiled it anyway. Their auxiliary-head output is not computed (``None``)."""
        if image.shape[-2] * image.shape[-1] > WHOLE_IMAGE_PIXELS:
            window = self._large_image_window()
            return torch.stack(window.many(list(image))).to(image.device), None
        valid = getattr(self.net, "padding", "same") == "valid"
        out = self(mirror_pad_for_valid(self.net, image) if valid else image)
        logits, class_logits = out if isinstance(out, tuple) else (out, None)  # (B, K, H', W'), (B, K_aux)
        return logits[..., : image.shape[-2], : image.shape[-1]], class_logits

    def _large_image_window(self) -> SlidingWindow:
        """The sliding window of :meth:`validation_logits`: eval's defaults for this run's model."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        precision = precision_name(self._trainer.precision) if self._trainer is not None else "fp32"
        tile = default_tile(self.net, training_patch(datamodule) if datamodule is not None else None)
        return SlidingWindow(self.net, tile, overlap=0.5, device=self.device, precision=precision,
                             channels_last=self.channels_last)  # fmt: skip

    @staticmethod
    def _drop_padding(out: StepOutput, batch: dict[str, torch.Tensor]) -> StepOutput:
        """Distributed evaluation: every rank ran the same number of batches; padding samples count for nothing.
        A rank whose batch is all padding goes on with batch size 0, so every rank takes part in every sync."""
        keep = ~batch["is_pad"] if "is_pad" in batch else None
        pick = (lambda t: t[keep] if t is not None else None) if keep is not None else (lambda t: t)
        return StepOutput(
            pick(out.logits), [pick(c) for c in out.coarse], pick(out.class_logits),
            mask=pick(batch["mask"]), weight=pick(batch.get("weight")), labels=pick(batch.get("labels")),
        )  # fmt: skip

    @staticmethod
    def _targets_like(logits: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None):
        """Valid-padding U-Nets predict the centre of a training tile only: crop mask and weights to it."""
        if logits.shape[-2:] == mask.shape[-2:]:
            return mask, weight
        return center_crop(mask, logits.shape[-2:]), center_crop(
            weight, logits.shape[-2:]
        ) if weight is not None else None

    def _segmentation_loss(self, out: StepOutput, mask: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
        if not out.batch_size:  # a zero weighted by batch size 0 keeps the epoch mean exact
            loss = out.logits.sum() * 0.0
        else:
            extra = {"weight": weight} if getattr(self.loss, "uses_weight_map", False) else {}
            loss = self.loss(out.logits, mask, **extra)
        if out.coarse:
            loss = deep_supervision_loss(self.loss, loss, out.coarse, mask, out.batch_size)
        return loss

    def _aux_loss(self, out: StepOutput, split: str) -> torch.Tensor:
        """The image-level head's BCE, weighted; it always takes part, so DDP never sees unused parameters.
        Targets: the batch's ``labels``, else the classes present in the (uncropped) mask."""
        class_logits = out.class_logits
        targets = (
            out.labels if out.labels is not None else class_presence(out.mask, class_logits.shape[1], self.ignore_index)
        )
        aux_loss = (
            F.binary_cross_entropy_with_logits(class_logits.float(), targets.float())
            if out.batch_size
            else class_logits.sum() * 0.0
        )
        self.log(f"{split}/aux_loss", aux_loss, on_epoch=True, batch_size=out.batch_size, sync_dist=split != "train")
        if split in self.aux_f1 and out.batch_size:
            self.aux_f1[split].update(class_logits, targets.long())
        return self.net.aux_loss_weight * aux_loss

    def _update_metrics(self, logits: torch.Tensor, mask: torch.Tensor, split: str) -> None:
        pred = two_class_logits(logits).argmax(dim=1)  # binary mode: sigmoid > 0.5 is class 1
        self.confmat[split].update(pred, mask)
        for metric in self.image_metrics[split].values():
            metric.update(pred, mask)

    def metadata_extras(self) -> dict:
        """Which per-image scores the run logged, so evaluation reports the same ones, and the recorded TTA."""
        return {"image_metrics": self.image_metric_names, "foreground_class": int(self.foreground_class),
                "tta": self.tta}  # fmt: skip

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
