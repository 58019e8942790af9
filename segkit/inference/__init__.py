"""Using a trained model: load it (model files and metadata), predict (sliding window, Predictor), score it
through the prediction path, export it."""

from segkit.inference.ensemble import Ensemble
from segkit.inference.evaluation import evaluate, split_samples
from segkit.inference.export import export
from segkit.inference.model_files import LoadedModel, best_checkpoint, inference_metadata, load_model
from segkit.inference.predictor import Predictor
from segkit.inference.sliding_window import SlidingWindow, mirror_pad, mirror_pad_for_valid

__all__ = [
    "Ensemble",
    "LoadedModel",
    "Predictor",
    "SlidingWindow",
    "best_checkpoint",
    "evaluate",
    "export",
    "inference_metadata",
    "load_model",
    "mirror_pad",
    "mirror_pad_for_valid",
    "split_samples",
]
