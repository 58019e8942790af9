"""A trained model leaves the run: the metadata every checkpoint carries, and ``load_model`` without Hydra.

``load_model(path)`` takes a ``.ckpt``, a run directory (its best checkpoint) or a model folder
(``save_pretrained``), and returns the network in eval mode with what inference needs to treat new images
exactly as training did: class names, palette, channels, intensity scaling, mean/std, patch size, padding.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from segkit.models.pretrained import FORMAT_VERSION, WEIGHTS_FILE, build_from_spec, model_spec, read_config

METADATA_KEY = "segkit"


@dataclass
class LoadedModel:
    """A network in eval mode and its inference metadata."""

    net: nn.Module
    metadata: dict[str, Any]
    source: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        """``"segmentation"`` or ``"classification"``."""
        return self.metadata["task"]

    @property
    def class_names(self) -> list[str]:
        """Class names, index order."""
        return list(self.metadata["class_names"])


def inference_metadata(net: nn.Module, task: str, class_names: list[str], datamodule: Any | None) -> dict:
    """Everything inference needs besides the weights, as plain JSON-able data."""
    from segkit.visualize import palette

    config = getattr(net, "config", {})
    meta: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "model": model_spec(net),
        "task": task,
        "num_classes": len(class_names),
        "class_names": list(class_names),
        "palette": (palette(len(class_names)) * 255).round().astype(int).tolist(),
        "in_channels": int(config.get("in_channels", 3)),
        "padding": config.get("padding", "same"),
    }
    if datamodule is not None:
        dataset = getattr(datamodule, "train_set", None)
        dataset = getattr(dataset, "dataset", dataset)  # a hold-out Subset
        intensity = getattr(dataset, "intensity", None)
        meta.update(
            mean=[float(v) for v in datamodule.mean],
            std=[float(v) for v in datamodule.std],
            ignore_index=int(getattr(datamodule, "ignore_index", 255)),
            patch_size=list(datamodule.patch_size) if getattr(datamodule, "patch_size", None) else None,
            intensity=intensity.to_dict() if intensity is not None else None,
            color_mode=getattr(dataset, "color_mode", "gray" if meta["in_channels"] == 1 else "rgb"),
        )
    return meta


def best_checkpoint(run_dir: Path) -> Path:
    """The run's best checkpoint (``checkpoints/epoch_*.ckpt``, kept by the monitor), else ``last.ckpt``."""
    folder = run_dir / "checkpoints"
    best = sorted(folder.glob("epoch_*.ckpt"), key=lambda p: p.stat().st_mtime)
    if best:
        return best[-1]
    if (folder / "last.ckpt").is_file():
        return folder / "last.ckpt"
    raise FileNotFoundError(f"{run_dir} has no checkpoints/epoch_*.ckpt or checkpoints/last.ckpt")


def _from_checkpoint(path: Path) -> LoadedModel:
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read checkpoint {path} ({type(err).__name__}: {str(err).splitlines()[0]})") from err
    meta = checkpoint.get(METADATA_KEY) if isinstance(checkpoint, dict) else None
    if meta is None:
        raise ValueError(
            f"{path} carries no segkit metadata: it was written by another tool or by segkit before 0.2. "
            "Load its weights into a network built by hand (UNet(...).load_state_dict), or retrain."
        )
    net = build_from_spec(meta["model"])
    state = {k[len("net.") :]: v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    net.load_state_dict(state)
    extra = {k: checkpoint[k] for k in ("epoch", "global_step") if k in checkpoint}
    return LoadedModel(net.eval(), meta, path, extra)


def load_model(path: str | Path) -> LoadedModel:
    """Rebuild a trained network from a ``.ckpt``, a run directory or a model folder; no Hydra, no network.

    Raises ``FileNotFoundError`` / ``ValueError`` naming the path when it is none of these, or a checkpoint
    without segkit's metadata.
    """
    path = Path(path)
    if path.is_dir() and (path / WEIGHTS_FILE).is_file():
        config = read_config(path)
        net = build_from_spec(config["model"])
        net.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
        return LoadedModel(net.eval(), config, path)
    if path.is_dir():
        if (path / "model" / WEIGHTS_FILE).is_file():
            return load_model(path / "model")
        return _from_checkpoint(best_checkpoint(path))
    if path.is_file():
        return _from_checkpoint(path)
    raise FileNotFoundError(f"no checkpoint, run directory or model folder at {path}")
