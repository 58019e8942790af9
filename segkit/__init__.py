"""segkit: U-Net image segmentation on PyTorch Lightning, Hydra and albumentations."""

import os

from omegaconf import OmegaConf

from segkit.inference.model_files import LoadedModel, load_model
from segkit.metrics import metric_mode
from segkit.precision import cpu_precision

# ${metric_mode:${optimized_metric}} in the configs: the direction of the monitored metric, from its name
OmegaConf.register_new_resolver("metric_mode", metric_mode, replace=True)
# ${metric_direction:${optimized_metric}}: the same, as Optuna says it (maximize | minimize), for sweeps
OmegaConf.register_new_resolver(
    "metric_direction", lambda name: "maximize" if metric_mode(name) == "max" else "minimize", replace=True
)
# ${cpu_precision:} in trainer=cpu: bf16-mixed where this CPU runs bf16 fast, else 32-true
OmegaConf.register_new_resolver("cpu_precision", cpu_precision, replace=True)
# ${dirname:${output}}: the folder of a file the command writes (export's log goes beside the exported model)
OmegaConf.register_new_resolver("dirname", lambda path: os.path.dirname(os.path.abspath(str(path))), replace=True)
# ${basename:${paths.output_dir}}: a run's own folder name (an MLflow run is named after it)
OmegaConf.register_new_resolver("basename", lambda path: os.path.basename(os.path.normpath(str(path))), replace=True)

__version__ = "0.2.0"
__all__ = ["LoadedModel", "load_model"]
