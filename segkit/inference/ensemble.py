"""Ensembles: several trained models predict as one, their class probabilities averaged tile by tile.

nnU-Net predicts with the five models of its cross-validation and averages their softmax outputs. Here the
members run inside one :class:`Ensemble` module, so the sliding window sees a single network: every tile goes
through each member, their probabilities are averaged, and the window blends the tiles as it does for one
model. Activation memory stays that of one model (members run one after the other on each tile batch); the
weights of all members are held.

Members must agree on everything that decides what a pixel means or how an image is read (task, classes,
channels, colour mode, intensity scaling, mean/std, padding); otherwise averaging their outputs mixes unrelated
things, and :func:`check_members` refuses them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from segkit.data.normalize import PER_IMAGE
from segkit.inference.model_files import LoadedModel, metadata_value, multirun_runs
from segkit.metrics.binary import two_class_logits

log = logging.getLogger(__name__)

MUST_MATCH = ("task", "class_names", "in_channels", "color_mode", "intensity", "normalization", "mean", "std",
              "padding", "ignore_index")  # fmt: skip
"""Metadata keys every member must share."""
DATASET_STATISTICS = ("mean", "std")  # unused, so not compared, when members z-score each image by its own


class Ensemble(nn.Module):
    """Averages the class probabilities of ``members``; returns their log, so argmax and softmax downstream
    read it as logits (``softmax(log p) = p`` for probabilities that sum to one).

    Binary members (one sigmoid channel) are read as two-class softmax logits first
    (:func:`segkit.metrics.two_class_logits`), so binary and two-class members can be mixed.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.members = nn.ModuleList(members)
        self.padding = getattr(members[0], "padding", "same")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = None
        for member in self.members:
            out = member(x)
            out = out[0] if isinstance(out, tuple) else out
            probabilities = two_class_logits(out.float()).softmax(dim=1)
            total = probabilities if total is None else total.add_(probabilities)
        return total.div_(len(self.members)).clamp_min_(1e-12).log_()

    def input_size_for(self, hw: tuple[int, int]) -> tuple[int, int]:
        """Valid padding: the input a member needs for ``hw`` outputs (members share their geometry)."""
        return self.members[0].input_size_for(hw)

    def output_size(self, hw: tuple[int, int]) -> tuple[int, int]:
        """Valid padding: the output of a member for an ``hw`` input."""
        return self.members[0].output_size(hw)


def check_members(models: Sequence[LoadedModel]) -> None:
    """Raise ``ValueError`` naming the first member whose classes, channels or preprocessing differ from the
    first's."""
    first = models[0]
    for other in models[1:]:
        per_image = all(metadata_value(m.metadata, "normalization") == PER_IMAGE for m in (first, other))
        for key in MUST_MATCH:
            if per_image and key in DATASET_STATISTICS:
                continue
            mine, theirs = (metadata_value(m.metadata, key) for m in (first, other))
            if mine != theirs:
                raise ValueError(
                    f"cannot ensemble {other.source} with {first.source}: their {key} differ "
                    f"({theirs!r} vs {mine!r}); ensemble members must share "
                    f"classes, channels and preprocessing ({', '.join(MUST_MATCH)})"
                )
        if first.metadata.get("padding") == "valid":
            probe = (256, 256)
            if first.net.output_size(probe) != other.net.output_size(probe):
                raise ValueError(f"cannot ensemble {other.source} with {first.source}: their valid-padding "
                                 "networks crop different borders (different depths)")  # fmt: skip


def member_paths(source: str | Path) -> list[Path]:
    """The models a path names: the finished runs of a multirun directory (one run per sub-folder, as
    ``python -m segkit.train -m ...`` writes), else the path itself (a list of one)."""
    path = Path(source)
    runs = multirun_runs(path)
    if runs is None:
        return [path]
    finished = [p for p in runs if (p / "model").is_dir()]
    for run in runs:
        if run not in finished:
            log.warning("Leaving %s out of the ensemble: it has no model/ (it did not finish)", run)
    if not finished:
        raise FileNotFoundError(f"the multirun directory {path} holds no finished run (no <run>/model/)")
    return finished
