"""segkit: U-Net image segmentation on PyTorch Lightning, Hydra and albumentations."""

import os
from typing import TYPE_CHECKING

from omegaconf import OmegaConf

# albumentations asks PyPI for its newest version when imported (2 s on a machine without a network, a
# warning on one with it); segkit never downloads at run time. An explicit setting still wins.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

if TYPE_CHECKING:  # type checkers and IDEs see the lazily imported names (see __getattr__)
    from segkit.inference.model_files import LoadedModel, load_model


def _metric_mode(name: str) -> str:
    """``segkit.metrics.metric_mode``, imported when a config resolves: importing the metrics (torchmetrics,
    scipy) with the package would cost every ``python -m segkit.…`` command about a second."""
    from segkit.metrics.confusion import metric_mode as mode

    return mode(name)


def _cpu_precision() -> str:
    """``segkit.precision.cpu_precision``, imported when a config resolves: it imports torch, which every
    command needs by then, but ``--help`` and a command-line typo are answered without (:mod:`segkit.cli`)."""
    from segkit.precision import cpu_precision

    return cpu_precision()


# ${metric_mode:${optimized_metric}} in the configs: the direction of the monitored metric, from its name
OmegaConf.register_new_resolver("metric_mode", _metric_mode, replace=True)
# ${metric_direction:${optimized_metric}}: the same, as Optuna says it (maximize | minimize), for sweeps
OmegaConf.register_new_resolver(
    "metric_direction", lambda name: "maximize" if _metric_mode(name) == "max" else "minimize", replace=True
)
# ${cpu_precision:} in trainer=cpu: bf16-mixed where this CPU runs bf16 fast, else 32-true
OmegaConf.register_new_resolver("cpu_precision", _cpu_precision, replace=True)
# ${dirname:${output}}: the folder of a file the command writes (export's log goes beside the exported model)
OmegaConf.register_new_resolver("dirname", lambda path: os.path.dirname(os.path.abspath(str(path))), replace=True)
# ${basename:${paths.output_dir}}: a run's own folder name (an MLflow run is named after it)
OmegaConf.register_new_resolver("basename", lambda path: os.path.basename(os.path.normpath(str(path))), replace=True)

__version__ = "0.2.0"
__all__ = ["LoadedModel", "load_model"]


def __getattr__(name: str):
    """``segkit.load_model`` and ``segkit.LoadedModel`` on first use: they import the models, timm and the
    metrics, which commands like ``python -m segkit.data.synthetic`` never need (5 s of its start-up)."""
    if name in __all__:
        from segkit.inference import model_files

        return getattr(model_files, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
