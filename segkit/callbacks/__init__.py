"""Lightning callbacks that save pictures of training."""

from segkit.callbacks.curves import MetricCurves
from segkit.callbacks.predictions import PredictionGrid

__all__ = ["MetricCurves", "PredictionGrid"]
