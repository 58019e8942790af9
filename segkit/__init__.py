"""segkit: U-Net image segmentation on PyTorch Lightning, Hydra and albumentations."""

from omegaconf import OmegaConf

from segkit.inference.model_files import LoadedModel, load_model
from segkit.metrics import metric_mode

# ${metric_mode:${optimized_metric}} in the configs: the direction of the monitored metric, from its name
OmegaConf.register_new_resolver("metric_mode", metric_mode, replace=True)

__version__ = "0.2.0"
__all__ = ["LoadedModel", "load_model"]
