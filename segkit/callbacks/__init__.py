"""Lightning callbacks: pictures of training and a checkpoint on SIGTERM."""

from segkit.callbacks.curves import MetricCurves
from segkit.callbacks.predictions import PredictionGrid
from segkit.callbacks.sigterm import CheckpointOnSigterm

__all__ = ["CheckpointOnSigterm", "MetricCurves", "PredictionGrid"]
