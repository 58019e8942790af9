"""Saving and rebuilding segkit networks without Hydra: a JSON config plus safetensors weights.

A network records its own constructor arguments (``net.config``); a saved model is that config, the weights
and the metadata inference needs (class names, palette, normalisation, patch size, ...). Rebuilding
instantiates the class it is called on (``UNet.from_pretrained``; :func:`segkit.inference.load_model` looks the
name up in segkit's own allowlist), never a class path read from a file, and never loads pretrained weights
again (``weights`` is cleared on saving).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


def model_spec(net: nn.Module) -> dict[str, Any]:
    """``{"class": name, "args": constructor arguments}`` with pretrained-weight arguments cleared."""
    config = getattr(net, "config", None)
    if not isinstance(net, PretrainedMixin) or config is None:
        raise ValueError(
            f"{type(net).__module__}.{type(net).__name__} is not a segkit model; only segkit's UNet and "
            "Classifier can be saved with their configuration and rebuilt without Hydra"
        )
    args = dict(config)
    args["weights"], args["strict_weights"] = None, False  # the saved tensors are the weights now
    return {"class": type(net).__name__, "args": args}


class PretrainedMixin:
    """``save_pretrained(dir)`` / ``from_pretrained(dir)``: the smp / Hugging Face habit, offline."""

    config: dict[str, Any]

    def save_pretrained(self, directory: str | Path, metadata: dict[str, Any] | None = None) -> Path:
        """Write ``config.json`` (class, arguments, ``metadata``) and ``model.safetensors`` to ``directory``."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"format": FORMAT_VERSION, "model": model_spec(self), **(metadata or {})}  # type: ignore[arg-type]
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}  # type: ignore[attr-defined]
        save_file(state, str(directory / WEIGHTS_FILE))
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        return directory

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> nn.Module:
        """Rebuild the network saved in ``directory`` in eval mode (metadata: :func:`read_config`)."""
        spec = read_config(directory)["model"]
        if spec.get("class") != cls.__name__:
            raise ValueError(f"{directory} holds a {spec.get('class')}, not a {cls.__name__}")
        net = cls(**{**spec.get("args", {}), "weights": None})  # the class itself: no class name read from a file
        net.load_state_dict(load_file(str(Path(directory) / WEIGHTS_FILE)))
        return net.eval()


def read_config(directory: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a model folder, with a clear error when it is not one."""
    directory = Path(directory)
    path = directory / CONFIG_FILE
    if not path.is_file() or not (directory / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{directory} is not a segkit model folder (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
    config = json.loads(path.read_text())
    if "model" not in config:
        raise ValueError(f"{path} has no 'model' entry; it was not written by segkit's save_pretrained")
    return config
