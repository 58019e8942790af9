"""A distributed sampler for evaluation that neither pads nor drops: every sample is seen exactly once."""

from __future__ import annotations

from collections.abc import Iterator

import torch.distributed as dist
from torch.utils.data import Dataset, DistributedSampler


class EvalDistributedSampler(DistributedSampler):
    """Rank ``r`` of ``W`` gets samples ``r, r + W, r + 2W, ...``; ranks may get one sample less than others.

    ``torch.utils.data.DistributedSampler`` pads the index list with repeats so all ranks get equal shares,
    which counts those samples twice in validation metrics. Metrics here are torchmetrics states summed across
    ranks, so unequal shares are fine. It subclasses ``DistributedSampler`` so Lightning keeps it as is.
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None) -> None:
        num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
        rank = dist.get_rank() if rank is None else rank
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        self.num_samples = len(range(rank, len(dataset), num_replicas))  # type: ignore[arg-type]
        self.total_size = len(dataset)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples
