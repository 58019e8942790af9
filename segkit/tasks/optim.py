"""Optimizer and scheduler construction shared by the tasks, with an encoder learning-rate multiplier."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


def encoder_param_groups(net: nn.Module, optimizer: OptimizerFactory, encoder_lr_mult: float) -> list[dict]:
    """One parameter group, or encoder and rest with ``lr * encoder_lr_mult`` for ``net.encoder``.

    Frozen parameters are left out. The base learning rate is read from the optimizer partial's ``lr``.
    """
    trainable = [p for p in net.parameters() if p.requires_grad]
    encoder = getattr(net, "encoder", None)
    if encoder_lr_mult == 1.0 or encoder is None:
        return [{"params": trainable}]
    base_lr = getattr(optimizer, "keywords", {}).get("lr")
    if base_lr is None:
        raise ValueError("encoder_lr_mult needs the optimizer's lr in its config (task.optimizer.lr)")
    encoder_ids = {id(p) for p in encoder.parameters()}
    return [
        {"params": [p for p in trainable if id(p) in encoder_ids], "lr": base_lr * encoder_lr_mult},
        {"params": [p for p in trainable if id(p) not in encoder_ids]},
    ]


def build_optimization(
    net: nn.Module,
    optimizer: OptimizerFactory,
    scheduler: SchedulerFactory | None,
    interval: str = "epoch",
    encoder_lr_mult: float = 1.0,
) -> dict:
    """Lightning's ``configure_optimizers`` answer: the optimizer and, if given, the scheduler and its interval."""
    built = optimizer(params=encoder_param_groups(net, optimizer, encoder_lr_mult))
    if scheduler is None:
        return {"optimizer": built}
    return {"optimizer": built, "lr_scheduler": {"scheduler": scheduler(optimizer=built), "interval": interval}}
