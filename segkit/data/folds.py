"""k-fold cross-validation splits, stratified by the classes each image contains.

nnU-Net trains five folds of the training set and reports the cross-validated score; segkit does the same with
``data.num_folds=K data.fold=i``. A plain random split can leave a rare class (CamVid's bicyclist, a lesion
present in a tenth of the scans) out of one fold's validation entirely, so that fold's score says nothing about
it. The split here is greedy and deterministic: images are placed rarest class first, each into the fold that
holds the fewest images of that class so far (ties: the smallest fold, then the lowest index), so every class
present in at least K images reaches every fold, and fold sizes differ by at most one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


def sample_strata(dataset: Dataset) -> list[tuple[int, ...]]:
    """Per sample, the classes it contains: ``dataset.classes_present`` (segmentation folders), the label
    (``dataset.labels``, classification), else nothing (a plain shuffled split)."""
    present = getattr(dataset, "classes_present", None)
    if present is not None:
        return [tuple(sorted(int(c) for c in classes)) for classes in present]
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return [(int(label),) for label in labels]
    return [() for _ in range(len(dataset))]  # type: ignore[arg-type]


def stratified_folds(strata: Sequence[Sequence[int]], num_folds: int, seed: int = 0) -> list[list[int]]:
    """Split sample indices into ``num_folds`` disjoint folds that together hold every index once.

    Args:
        strata: per sample, the classes it contains (:func:`sample_strata`).
        num_folds: K, at least 2 and at most the number of samples.
        seed: shuffles the order within equally rare samples; the same seed gives the same folds.

    Returns:
        ``num_folds`` sorted lists of indices.
    """
    n = len(strata)
    if not 2 <= num_folds <= n:
        raise ValueError(f"data.num_folds={num_folds} needs 2 <= K <= the {n} training samples")
    counts = Counter(c for classes in strata for c in set(classes))
    order = np.random.default_rng(seed).permutation(n).tolist()
    # rarest class first; samples without classes last, in the shuffled order
    order.sort(key=lambda i: min((counts[c] for c in strata[i]), default=n + 1))
    floor, ceil = n // num_folds, -(-n // num_folds)
    folds: list[list[int]] = [[] for _ in range(num_folds)]
    per_class = [Counter() for _ in range(num_folds)]
    for placed, index in enumerate(order):
        rarest = min(strata[index], key=lambda c: (counts[c], c), default=None)
        candidates = [f for f in range(num_folds) if len(folds[f]) < ceil]
        # Once the samples left only just bring every fold up to floor(n/K), fill the smallest folds first:
        # sizes end within one of each other.
        shortfall = sum(max(0, floor - len(fold)) for fold in folds)
        if n - placed <= shortfall:
            smallest = min(len(folds[f]) for f in candidates)
            candidates = [f for f in candidates if len(folds[f]) == smallest]
        target = min(candidates, key=lambda f: (per_class[f][rarest], len(folds[f]), f))
        folds[target].append(index)
        per_class[target].update(set(strata[index]))
    return [sorted(fold) for fold in folds]


def fold_indices(strata: Sequence[Sequence[int]], num_folds: int, fold: int, seed: int = 0) -> tuple[list, list]:
    """``(train, val)`` indices of fold ``fold`` of ``num_folds``: val is that fold, train every other."""
    if not 0 <= fold < num_folds:
        raise ValueError(f"data.fold={fold} is not one of the {num_folds} folds 0..{num_folds - 1}")
    folds = stratified_folds(strata, num_folds, seed)
    train = sorted(i for f, indices in enumerate(folds) if f != fold for i in indices)
    return train, folds[fold]


def holdout_indices(n: int, val_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """``(train, val)`` indices when a data config has no validation set: a random ``val_fraction`` of the
    ``n`` training samples, drawn with ``seed``, so training and ``segkit.eval`` hold out the same images."""
    n_val = max(1, round(n * val_fraction))
    if not 0 < val_fraction < 1 or n_val >= n:
        raise ValueError(f"data.val_fraction={val_fraction} leaves no training data from {n} samples")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return sorted(order[n_val:]), sorted(order[:n_val])
