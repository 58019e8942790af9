"""Samplers: distributed evaluation that counts every sample exactly once and gives every rank work, and
fixed-length training epochs drawn with replacement."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


class EvalDistributedSampler(DistributedSampler):
    """Rank ``r`` of ``W`` gets samples ``r, r + W, r + 2W, ...``, padded to ``ceil(N / W)`` with marked repeats.

    ``torch.utils.data.DistributedSampler`` pads with plain repeats, which counts those samples twice in the
    metrics; giving ranks unequal shares without padding leaves a rank empty when there are fewer samples
    than processes (Lightning refuses a zero-length loader), and unequal batch counts can hang collectives.
    Here every rank gets the same number of indices, and a padding index is ``len(dataset) + i`` (a repeat of
    sample ``i``) that :class:`PaddingMarked` turns into a sample flagged ``"is_pad": True``, which the tasks
    leave out of losses and metrics. Subclassing ``DistributedSampler`` makes Lightning keep it as is.
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None) -> None:
        num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
        rank = dist.get_rank() if rank is None else rank
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.dataset_size = len(dataset)  # type: ignore[arg-type]
        self.num_samples = math.ceil(self.dataset_size / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        own = list(range(self.rank, self.dataset_size, self.num_replicas))
        padding = [self.dataset_size + own[0] if own else self.dataset_size] * (self.num_samples - len(own))
        return iter(own + padding)

    def __len__(self) -> int:
        return self.num_samples


class PaddingMarked(Dataset):
    """Adds ``"is_pad"`` to each sample dict: ``False`` for ``i < len(dataset)``, ``True`` for padding indices."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.size = len(dataset)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        is_pad = index >= self.size
        sample = dict(self.dataset[index - self.size if is_pad else index])
        sample["is_pad"] = is_pad
        return sample


class EpochSampler(DistributedSampler):
    """Fixed-length epochs drawn with replacement: ``samples_per_epoch`` samples per epoch over all ranks.

    Small datasets (24 EM slices) otherwise give epochs of a few steps, and every epoch pays for validation,
    pictures and Lightning's epoch machinery (nnU-Net draws 250 batches an epoch for the same reason). Each
    rank draws ``samples_per_epoch / world_size`` indices from its own stream, seeded by (seed, rank, epoch):
    a run repeats for a fixed seed and world size, ranks see different samples, and every epoch differs.
    Subclassing ``DistributedSampler`` makes Lightning keep it (and call ``set_epoch``) under DDP.
    ``weights``: draw sample ``i`` in proportion to ``weights[i]`` instead of uniformly.
    """

    def __init__(self, dataset: Dataset, samples_per_epoch: int, seed: int = 0, num_replicas: int | None = None,
                 rank: int | None = None, weights: Sequence[float] | None = None) -> None:  # fmt: skip
        distributed = dist.is_available() and dist.is_initialized()
        num_replicas = num_replicas if num_replicas is not None else (dist.get_world_size() if distributed else 1)
        rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        if samples_per_epoch < num_replicas:
            raise ValueError(f"samples_per_epoch={samples_per_epoch} is less than the {num_replicas} processes")
        self.dataset_size = len(dataset)  # type: ignore[arg-type]
        if weights is not None and len(weights) != self.dataset_size:
            raise ValueError(f"{len(weights)} sampling weights for {self.dataset_size} samples")
        self.weights = torch.as_tensor(weights, dtype=torch.float64) if weights is not None else None
        self.num_samples = samples_per_epoch // num_replicas
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        seed = int(np.random.SeedSequence([self.seed % 2**32, self.rank, self.epoch]).generate_state(1)[0])
        generator = torch.Generator().manual_seed(seed)
        if self.weights is not None:
            drawn = torch.multinomial(self.weights, self.num_samples, replacement=True, generator=generator)
            return iter(drawn.tolist())
        return iter(torch.randint(self.dataset_size, (self.num_samples,), generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples
