"""A trained model leaves the run: the metadata every checkpoint carries, and ``load_model`` without Hydra.

``load_model(path)`` takes a ``.ckpt``, a run directory (the model it handed over) or a model folder
(``save_pretrained``), and returns the network in eval mode with what inference needs to treat new images
exactly as training did: class names, palette, channels, intensity scaling, mean/std, training crop, padding,
precision. Only segkit's own classes are ever built from a file (:func:`model_classes`, an allowlist)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from torch import nn

from segkit.data.datamodule import unwrapped
from segkit.models import Classifier, UNet
from segkit.models.pretrained import FORMAT_VERSION, WEIGHTS_FILE, model_spec, read_config
from segkit.models.weights import weight_file_format

METADATA_KEY = "segkit"
UNSAID = {"normalization": "dataset"}  # keys added after model files were first written: what older files did


def metadata_value(meta: dict, key: str) -> Any:
    """``meta[key]``, or what a model file written before ``key`` existed did (:data:`UNSAID`)."""
    return meta.get(key, UNSAID.get(key))


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


def precision_name(trainer_precision: str | None) -> str:
    """Lightning's precision string (``bf16-mixed``, ``32-true``, ``16-mixed``) -> ``bf16``, ``fp32``, ``fp16``."""
    text = str(trainer_precision)
    return "bf16" if "bf16" in text else "fp16" if text.startswith("16") else "fp32"


CROPS = ("RandomCrop", "CenterCrop", "Crop", "RandomResizedCrop", "RandomSizedCrop", "CropNonEmptyMaskIfExists",
         "AtLeastOneBBoxRandomCrop", "RandomCropNearBBox")  # fmt: skip


def training_patch(datamodule: Any) -> list[int] | None:
    """``[h, w]`` the network trained on: ``data.patch_size``, else the augmentation pipeline's crop."""
    if getattr(datamodule, "patch_size", None):
        return list(datamodule.patch_size)
    return training_crop(getattr(datamodule, "train_transform", None))


def training_crop(transform: Any) -> list[int] | None:
    """``[h, w]`` of the first crop in an albumentations pipeline (nested ones included), else ``None``.

    Recipes that crop in their augmentation config (``aug/em_paper.yaml``) rather than with
    ``data.patch_size`` still tell inference what size of input the network was trained on.
    """
    for op in getattr(transform, "transforms", []) or []:
        if type(op).__name__ in CROPS:
            size = getattr(op, "size", None)
            if size is not None:
                return [int(size[0]), int(size[1])]
            if getattr(op, "height", None) and getattr(op, "width", None):
                return [int(op.height), int(op.width)]
        nested = training_crop(op)
        if nested:
            return nested
    return None


def inference_metadata(net: nn.Module, task: str, class_names: list[str], datamodule: Any | None,
                       precision: str | None = None) -> dict:  # fmt: skip
    """Everything inference needs besides the weights, as plain JSON-able data.

    ``precision`` is the trainer's (``bf16-mixed``, ``32-true``...): inference runs the model the way it was
    trained unless told otherwise. ``patch_size`` is the training crop, from ``data.patch_size`` or the
    augmentation pipeline.
    """
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
        "precision": precision_name(precision) if precision is not None else None,
    }
    if datamodule is not None:
        dataset = unwrapped(getattr(datamodule, "train_set", None))
        intensity = getattr(dataset, "intensity", None)
        meta.update(
            mean=[float(v) for v in datamodule.mean],
            std=[float(v) for v in datamodule.std],
            normalization=getattr(datamodule, "normalization", "dataset"),
            ignore_index=int(getattr(datamodule, "ignore_index", 255)),
            patch_size=training_patch(datamodule),
            intensity=intensity.to_dict() if intensity is not None else None,
            color_mode=getattr(dataset, "color_mode", "gray" if meta["in_channels"] == 1 else "rgb"),
        )
    return meta


def model_classes() -> dict[str, type[nn.Module]]:
    """The allowlist: the only classes a saved config may name."""
    return {"UNet": UNet, "Classifier": Classifier}


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """Instantiate a network from :func:`model_spec`'s output (allowlisted classes only)."""
    classes = model_classes()
    name = spec.get("class")
    if name not in classes:
        raise ValueError(f"model class {name!r} is not one of segkit's {sorted(classes)}; refusing to build it")
    args = {**spec.get("args", {}), "weights": None}
    return classes[name](**args)


def best_checkpoint(run_dir: str | Path) -> Path:
    """The checkpoint the run's monitor chose, read from the checkpoint callback's state in ``last.ckpt``
    (``best_model_path``), not guessed from file names or times.

    A run folder that was moved still works: the file is looked up by name in ``<run_dir>/checkpoints``.
    Raises ``FileNotFoundError`` when the run kept no best checkpoint.
    """
    folder = Path(run_dir) / "checkpoints"
    last = folder / "last.ckpt"
    if not last.is_file():
        raise FileNotFoundError(f"{run_dir} has no checkpoints/last.ckpt to read the best checkpoint from")
    state = torch.load(last, map_location="cpu", weights_only=True, mmap=True)
    for key, callback in (state.get("callbacks") or {}).items():
        path = callback.get("best_model_path") if key.startswith("ModelCheckpoint") else None
        if not path:
            continue
        for candidate in (Path(path), folder / Path(path).name):
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(f"the best checkpoint of {run_dir}, {path}, no longer exists")
    raise FileNotFoundError(f"{run_dir} kept no best checkpoint (no monitoring ModelCheckpoint in its last.ckpt)")


def multirun_runs(path: Path) -> list[Path] | None:
    """The run folders of a multirun directory (``python -m segkit.train -m ...``: ``multirun.yaml`` beside one
    run per sub-folder), in job order; ``None`` when ``path`` is not one."""
    if not path.is_dir() or not (path / "multirun.yaml").is_file():
        return None
    runs = (p for p in path.iterdir() if p.is_dir() and (p / ".hydra").is_dir())
    return sorted(runs, key=lambda p: (0, int(p.name)) if p.name.isdigit() else (1, p.name))


def handed_over(run_dir: Path) -> Path:
    """What a run directory stands for: its ``model/`` folder (the weights ``callbacks.export_weights`` chose),
    else, for a run that did not finish, ``checkpoints/last.ckpt`` (its newest weights)."""
    for candidate in (run_dir / "model", run_dir / "checkpoints" / "last.ckpt"):
        if candidate.exists():
            return candidate
    runs = multirun_runs(run_dir)
    if runs is not None:
        names = [r.name for r in runs]
        raise ValueError(
            f"{run_dir} is a multirun directory ({len(runs)} runs: {', '.join(names)}), and this takes one model: "
            f"give one run, e.g. {runs[0] if runs else run_dir / '0'}. segkit.predict, segkit.eval and segkit.serve "
            "take the whole directory as an ensemble"
        )
    raise FileNotFoundError(f"{run_dir} has neither model/ nor checkpoints/last.ckpt")


def run_config(path: str | Path) -> tuple[Path, Any] | None:
    """``(file, config)`` of the run a checkpoint, model folder or run directory came from: the nearest
    ``.hydra/config.yaml`` at ``path`` or up to two folders above it; ``None`` outside a run directory."""

    path = Path(path).resolve()
    for folder in [path, *path.parents][:3]:
        candidate = folder / ".hydra" / "config.yaml"
        if candidate.is_file():
            return candidate, OmegaConf.load(candidate)
    return None


def check_classes(meta: dict, num_classes: int, class_names: list[str] | None, what: str) -> None:
    """Refuse data whose class count or names differ from the model's: scores would compare unrelated labels."""
    if int(meta["num_classes"]) != int(num_classes):
        raise ValueError(
            f"the model predicts {meta['num_classes']} classes {meta['class_names']} but {what} has {num_classes}; "
            "evaluate it on the data it was trained for (leave data= out to use the run's own data config)"
        )
    if class_names is not None and list(class_names) != list(meta["class_names"]):
        raise ValueError(f"the model's classes {meta['class_names']} differ from {what}'s {list(class_names)}")


def _from_checkpoint(path: Path) -> LoadedModel:
    try:
        is_torch_file = weight_file_format(path) != "safetensors"
    except ValueError:
        is_torch_file = False
    if not is_torch_file:  # a log, an image, or a model folder's weights alone: torch would say "unpickling"
        hint = f" (the model folder is {path.parent})" if path.name == WEIGHTS_FILE else ""
        raise ValueError(f"{path} is not a Lightning checkpoint{hint}; ckpt= takes a run directory, a .ckpt "
                         "file or a model folder")  # fmt: skip
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
        return load_model(handed_over(path))
    if path.is_file():
        return _from_checkpoint(path)
    raise FileNotFoundError(f"no checkpoint, run directory or model folder at {path}")
