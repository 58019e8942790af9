"""Checks of the data settings that shape a training step: crop size, zoom, foreground share, batch.

The datamodule checks them when a run starts; the planner checks the ones the user typed before its probe
spends half a minute building crops from them. Both call these functions, so a bad value fails with the
same message naming the setting, never in a ``TypeError`` from deep inside albumentations or torch.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence


def positive_int(value) -> bool:
    """A whole number above 0 (``True`` is not one)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0


def checked_size(value, key: str) -> tuple[int, int] | None:
    """``value`` as ``(height, width)`` in pixels, or ``None``; anything else is refused, naming ``key``."""
    if value is None:
        return None
    if not (isinstance(value, Sequence) and len(value) == 2 and all(positive_int(v) for v in value)):
        shown = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else value
        raise ValueError(f"{key} must be [height, width] in pixels (e.g. {key}=[256,256]), got {shown!r}")
    return int(value[0]), int(value[1])


def checked_patch_size(value) -> tuple[int, int] | None:
    """``data.patch_size`` as ``(height, width)``, or ``None`` (whole images)."""
    return checked_size(value, "data.patch_size")


def checked_batch_size(value) -> int:
    """``data.batch_size``: a positive whole number of crops (or images)."""
    if not positive_int(value):
        raise ValueError(f"data.batch_size must be a positive whole number of crops, got {value!r}")
    return int(value)


def checked_patch_scale(value) -> tuple[float, float] | None:
    """``data.patch_scale`` as ``(low, high)`` zoom factors with ``0 < low <= high``, or ``None`` (no zoom)."""
    if value is None:
        return None
    pair = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == 2
    numeric = pair and all(isinstance(f, numbers.Real) and not isinstance(f, bool) for f in value)
    low, high = (float(value[0]), float(value[1])) if numeric else (float("nan"), float("nan"))
    if not 0 < low <= high:  # also false for NaN
        raise ValueError(f"data.patch_scale must be [low, high] zoom factors with 0 < low <= high, got {value!r}")
    return low, high


def check_crop_settings(crops: bool, patch_scale, foreground_crops) -> None:
    """``data.patch_scale`` and ``data.foreground_crops`` act on the training crops: each needs ``crops``
    (a ``data.patch_size``). With whole images (``patch_size=null``) they would be silently ignored."""
    checked_patch_scale(patch_scale)
    if isinstance(foreground_crops, bool) or not (
        isinstance(foreground_crops, numbers.Real) and 0.0 <= foreground_crops <= 1.0
    ):
        raise ValueError(f"data.foreground_crops must be a share in [0, 1] (nnU-Net: 0.33), got {foreground_crops!r}")
    if not crops and patch_scale is not None:
        raise ValueError("data.patch_scale zooms images before their patch_size crop: set data.patch_size too")
    if not crops and foreground_crops:
        raise ValueError("data.foreground_crops places training crops: set data.patch_size too")
