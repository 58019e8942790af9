"""What every task shares: step dispatch, channels-last forward, optimizer and scheduler construction."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Timer
from pytorch_lightning.trainer.states import TrainerFn
from torch import nn

from segkit.inference.model_files import METADATA_KEY, inference_metadata
from segkit.models.encoders import no_weight_decay_names

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


def param_groups(
    net: nn.Module, optimizer: OptimizerFactory, encoder_lr_mult: float = 1.0, decay_norms_and_biases: bool = False
) -> list[dict]:
    """The optimizer's parameter groups: ``net.encoder`` at ``lr * encoder_lr_mult`` apart from the rest when
    the multiplier is not 1, and within each, the norms' scales and shifts and the biases (every parameter of
    one dimension) with no weight decay unless ``decay_norms_and_biases``. Each group is named, so Lightning's
    ``LearningRateMonitor`` logs ``lr-AdamW/weights`` and ``lr-AdamW/weights_norms_biases`` (``encoder``, ``rest``
    with the multiplier); a single group keeps the plain ``lr-AdamW``.

    Weight decay is there to keep the weights that multiply inputs small. A norm's scale shrunk towards zero
    silences its channel instead, and a bias is one number a channel; timm (``filter_bias_and_bn``) and
    nanoGPT leave them undecayed, and so does segkit, with the position embeddings and bias tables a timm
    encoder lists in ``no_weight_decay()``. Frozen parameters are left out. The base learning rate
    is read from the optimizer partial's ``lr``.
    """
    trainable = [p for p in net.parameters() if p.requires_grad]
    encoder = getattr(net, "encoder", None)
    if encoder_lr_mult == 1.0 or encoder is None:
        by_rate = [{"params": trainable, "name": "weights"}]
    else:
        base_lr = getattr(optimizer, "keywords", {}).get("lr")
        if base_lr is None:
            raise ValueError("encoder_lr_mult needs the optimizer's lr in its config (task.optimizer.lr)")
        encoder_ids = {id(p) for p in encoder.parameters()}
        by_rate = [
            {
                "params": [p for p in trainable if id(p) in encoder_ids],
                "lr": base_lr * encoder_lr_mult,
                "name": "encoder",
            },
            {"params": [p for p in trainable if id(p) not in encoder_ids], "name": "rest"},
        ]
    groups = by_rate
    if not decay_norms_and_biases:
        listed = listed_no_weight_decay(net)
        groups = []
        for group in by_rate:
            decayed = [p for p in group["params"] if p.ndim > 1 and id(p) not in listed]
            undecayed = [p for p in group["params"] if p.ndim <= 1 or id(p) in listed]
            groups += [{**group, "params": decayed}] if decayed else []
            undecayed_group = {
                **group,
                "params": undecayed,
                "weight_decay": 0.0,
                "name": f"{group['name']}_norms_biases",
            }
            groups += [undecayed_group] if undecayed else []
    if len(groups) == 1:
        del groups[0]["name"]
    return groups


def listed_no_weight_decay(net: nn.Module) -> set[int]:
    """``id()`` of every parameter a submodule lists in ``no_weight_decay()``, timm's convention for the
    tensors of two or more dimensions that are not weights (ViT's position embedding and class token, Swin's
    relative position bias tables); :class:`segkit.models.encoders.TimmEncoder` keeps the list through timm's
    ``features_only`` wrappers."""
    listed = set()
    for module in net.modules():
        if names := no_weight_decay_names(module):
            listed |= {id(p) for name, p in module.named_parameters() if name in names}
    return listed


def build_optimization(
    net: nn.Module,
    optimizer: OptimizerFactory,
    scheduler: SchedulerFactory | None,
    interval: str = "epoch",
    encoder_lr_mult: float = 1.0,
    budget: dict | None = None,
    decay_norms_and_biases: bool = False,
) -> dict:
    """Lightning's ``configure_optimizers`` answer: the optimizer and, if given, the scheduler and its interval.

    ``budget`` (``total_steps``, ``max_seconds``) goes to schedulers whose constructor takes those names
    (:class:`segkit.schedulers.PolyLR`), so they decay over the run's real length.
    """
    built = optimizer(params=param_groups(net, optimizer, encoder_lr_mult, decay_norms_and_biases))
    if scheduler is None:
        return {"optimizer": built}
    target = getattr(scheduler, "func", scheduler)  # Hydra's _partial_ gives a functools.partial
    try:
        accepted = inspect.signature(target).parameters
    except (TypeError, ValueError):
        accepted = {}
    extra = {k: v for k, v in (budget or {}).items() if k in accepted}
    built_scheduler = scheduler(optimizer=built, **extra)
    return {"optimizer": built, "lr_scheduler": {"scheduler": built_scheduler, "interval": interval}}


class Task(pl.LightningModule):
    """Base of the tasks: holds the net, the optimizer/scheduler factories and the class names.

    Subclasses call ``save_hyperparameters`` (so checkpoints record their plain arguments) and implement
    ``_shared_step(batch, split)`` and ``_log_epoch(split)``. Every checkpoint of a segkit network also carries
    the metadata :func:`segkit.load_model` rebuilds it from.
    """

    task_name = "segmentation"

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None,
        num_classes: int,
        class_names: Sequence[str] | None,
        channels_last: bool,
        compile: bool = False,
        scheduler_interval: str = "epoch",
        encoder_lr_mult: float = 1.0,
        decay_norms_and_biases: bool = False,
    ) -> None:
        super().__init__()
        self.scheduler_interval = scheduler_interval
        self.encoder_lr_mult = encoder_lr_mult
        self.decay_norms_and_biases = decay_norms_and_biases
        self.net = net.to(memory_format=torch.channels_last) if channels_last else net
        self.channels_last = channels_last
        # torch.compile wraps the forward only: self.net (and so every checkpoint and model/ folder) keeps its
        # plain parameter names, and the model config stays the network's constructor arguments.
        # Set past nn.Module's registry, so the compiled wrapper adds no duplicate "_compiled._orig_mod.*" keys.
        object.__setattr__(self, "_compiled", torch.compile(self.net) if compile else None)
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.class_names = list(class_names) if class_names is not None else [f"class_{i}" for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} names but num_classes is {num_classes}")

    def forward(self, image: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """The network's output for a batch of normalised images."""
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        return (self._compiled if self._compiled is not None else self.net)(image)

    def _shared_step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        raise NotImplementedError

    def _log_epoch(self, split: str) -> None:
        raise NotImplementedError

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """One optimisation step's loss."""
        return self._shared_step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Accumulate the validation loss and metrics."""
        self._shared_step(batch, "val")

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        """Accumulate the test loss and metrics."""
        self._shared_step(batch, "test")

    def on_validation_epoch_end(self) -> None:
        """Log the epoch's validation metrics."""
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        """Log the test metrics."""
        self._log_epoch("test")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Add the inference metadata (network arguments, classes, preprocessing) under ``"segkit"``."""
        if getattr(self.net, "config", None) is None:
            return  # not a segkit network (e.g. an smp model): it cannot be rebuilt without its config
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        checkpoint[METADATA_KEY] = self.inference_metadata(datamodule)

    def inference_metadata(self, datamodule: pl.LightningDataModule | None) -> dict:
        """What :func:`segkit.load_model` and ``segkit.eval`` need: the network's, the data's, and the task's
        own (:meth:`metadata_extras`)."""
        precision = self.trainer.precision if self._trainer is not None else None
        meta = inference_metadata(self.net, self.task_name, self.class_names, datamodule, precision)
        meta.update(self.metadata_extras())
        return meta

    def metadata_extras(self) -> dict:
        """Task-specific metadata keys (none here)."""
        return {}

    def configure_optimizers(self) -> dict:
        """Build the optimizer (and scheduler) from the injected factories."""
        return build_optimization(
            self.net,
            self.optimizer_factory,
            self.scheduler_factory,
            self.scheduler_interval,
            self.encoder_lr_mult,
            budget=self.training_budget(),
            decay_norms_and_biases=self.decay_norms_and_biases,
        )

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Check that a checkpoint a trainer loads holds this network, and, when ``Trainer.fit`` resumes, that
        the optimizer state fits this task's parameter groups.

        Only a resumed fit restores the optimizer: ``load_from_checkpoint`` (inference, fine-tuning) and
        ``validate``/``test`` of an older checkpoint take its weights alone and load whatever its groups.
        """
        if self._trainer is None:
            return
        self.check_network_shapes(checkpoint, str(self.trainer.ckpt_path))
        if self.trainer.state.fn == TrainerFn.FITTING:
            self.check_resumable(checkpoint, str(self.trainer.ckpt_path))

    def check_network_shapes(self, checkpoint: dict, path: str) -> None:
        """Refuse a checkpoint of another network (``ckpt_path=last`` with ``model.base_channels`` changed),
        naming the file and a tensor that differs: torch's answer is a "size mismatch" line per tensor."""
        saved = checkpoint.get("state_dict", {})
        built = {k: tuple(v.shape) for k, v in self.state_dict().items() if k.startswith("net.")}
        differ = [(k, tuple(saved[k].shape) if k in saved else None, shape) for k, shape in built.items()
                  if k not in saved or tuple(saved[k].shape) != shape]  # fmt: skip
        if differ:
            key, theirs, ours = differ[0]
            found = f"{theirs} there, {ours} here" if theirs is not None else f"absent there, {ours} here"
            raise ValueError(
                f"{path} holds another network than this run builds: {len(differ)} of its {len(built)} network tensors "
                f"differ (e.g. {key}: {found}). Use the model settings of the run that wrote it (its "
                ".hydra/config.yaml, model.*), or train in a new run directory"
            )

    def check_resumable(self, checkpoint: dict, path: str) -> None:
        """Refuse a checkpoint whose optimizer state holds other parameter groups than this task builds,
        naming the file and the keys that shape the groups (Lightning would stop deep inside torch's
        ``Optimizer.load_state_dict``)."""
        saved = [[len(g["params"]) for g in state["param_groups"]] for state in checkpoint.get("optimizer_states", [])]
        groups = param_groups(self.net, self.optimizer_factory, self.encoder_lr_mult, self.decay_norms_and_biases)
        built = [len(g["params"]) for g in groups]
        if saved and saved[0] != built:
            raise ValueError(
                f"{path}: its optimizer state holds parameter groups of {saved[0]} tensors where this run builds "
                f"{built}, so it cannot resume as configured. The groups follow task.encoder_lr_mult and "
                "task.decay_norms_and_biases (and which parameters are frozen): set them as the run that wrote it "
                "had them (its .hydra/config.yaml). A checkpoint from before segkit left norms and biases "
                "undecayed (December 2026) resumes with task.decay_norms_and_biases=true."
            )

    def training_budget(self) -> dict:
        """The run's length: ``total_steps`` (from max_epochs/max_steps) and ``max_seconds`` (from max_time)."""
        if self._trainer is None:
            return {}
        timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)
        max_seconds = timer.time_remaining() + timer.time_elapsed() if timer is not None else None
        steps = self.trainer.estimated_stepping_batches
        return {"total_steps": int(steps) if math.isfinite(steps) else None, "max_seconds": max_seconds}
