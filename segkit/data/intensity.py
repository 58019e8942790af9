"""Intensity normalisation for images that are not 8-bit (EM, fluorescence, medical): any dtype -> [0, 1].

8-bit images need none: the datamodule's Normalize divides them by 255. 16-bit, 32-bit and float images have
no such fixed scale, so they are mapped to float32 in [0, 1] first, by a fixed range (the detector's range,
or CT-like calibrated values) or by per-image 0.5-99.5 percentiles. (nnU-Net clips CT data at such percentiles
of the dataset's foreground; for other images it z-scores each image, segkit's ``data.normalization=image``.)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

MODES = ("percentile", "range")


class IntensityNormalization:
    """Clip to ``[lo, hi]`` and rescale to float32 ``[0, 1]``.

    Args:
        mode: ``"percentile"``: ``lo``/``hi`` are the ``low``-th and ``high``-th percentiles of each image (over
            all its channels); ``"range"``: ``lo = low`` and ``hi = high`` in stored units (e.g. 0 and 4095
            for a 12-bit camera).
        low: lower percentile (0-100) or lower stored value.
        high: upper percentile (0-100) or upper stored value.
    """

    def __init__(self, mode: str = "percentile", low: float = 0.5, high: float = 99.5) -> None:
        if mode not in MODES:
            raise ValueError(f"intensity mode must be one of {MODES}, got {mode!r}")
        if not high > low:
            raise ValueError(f"intensity high ({high}) must be greater than low ({low})")
        if mode == "percentile" and not (0 <= low and high <= 100):
            raise ValueError(f"percentiles must lie in 0..100, got low={low}, high={high}")
        self.mode, self.low, self.high = mode, float(low), float(high)

    @classmethod
    def from_spec(cls, spec: Mapping | IntensityNormalization | None) -> IntensityNormalization | None:
        """Build from a config mapping (``{mode: range, low: 0, high: 4095}``), pass objects and ``None`` through."""
        if spec is None or isinstance(spec, IntensityNormalization):
            return spec
        unknown = set(spec) - {"mode", "low", "high"}
        if unknown:
            raise ValueError(f"intensity takes mode, low and high; got unknown keys {sorted(unknown)}")
        return cls(**spec)

    def to_dict(self) -> dict:
        """The spec as plain data (saved with a model, so prediction preprocesses as training did)."""
        return {"mode": self.mode, "low": self.low, "high": self.high}

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """``(H, W[, C])`` of any numeric dtype -> float32 in ``[0, 1]``, same shape."""
        x = image.astype(np.float32, copy=False)
        if self.mode == "range":
            lo, hi = self.low, self.high
        else:
            lo, hi = (float(v) for v in np.percentile(x, [self.low, self.high]))
        if hi <= lo:  # a constant image: nothing to stretch
            return np.zeros_like(x, dtype=np.float32)
        return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32, copy=False)

    def __repr__(self) -> str:
        return f"IntensityNormalization(mode={self.mode!r}, low={self.low}, high={self.high})"


DEFAULT_HIGH_BIT = IntensityNormalization("percentile", 0.5, 99.5)
