"""Lightning callbacks: pictures of training, progress lines, the last checkpoint and one on SIGTERM, the budget."""

from segkit.callbacks.budget import StopAtBudget
from segkit.callbacks.curves import MetricCurves
from segkit.callbacks.last_checkpoint import LastCheckpoint, monitoring_checkpoint
from segkit.callbacks.predictions import PredictionGrid
from segkit.callbacks.progress import LogProgress, terminal_progress_bar
from segkit.callbacks.sigterm import CheckpointOnSigterm

__all__ = [
    "CheckpointOnSigterm",
    "LastCheckpoint",
    "monitoring_checkpoint",
    "LogProgress",
    "MetricCurves",
    "PredictionGrid",
    "StopAtBudget",
    "terminal_progress_bar",
]
