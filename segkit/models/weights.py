"""Pretrained encoder weights from one spec string: ``None``, a timm tag, or ``file:<path>``.

Files are read without unpickling arbitrary objects (safetensors, or ``torch.load(weights_only=True)``) and
may be plain state dicts in torchvision or timm format, ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers
(Lightning checkpoints included), DataParallel ``module.`` prefixes, segkit checkpoints (segmentation or
classification) and smp ``Unet`` checkpoints; the encoder part is extracted. Every load returns a
:class:`LoadReport` that says what came across.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import torch
from torch import nn

log = logging.getLogger(__name__)

# Prefixes that wrap an encoder's own keys. "module." (DataParallel/DDP) and "model." (segkit's and smp's timm
# wrappers) are stripped when every key has them; "net." (segkit tasks) and "encoder." (segkit and smp models)
# select the part of a bigger checkpoint that holds the encoder.
SHARED_PREFIXES = ("module.", "model.")
SELECTING_PREFIXES = ("net.", "encoder.")


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be fetched (typically: no network); the message says what to do instead."""


@dataclass
class LoadReport:
    """What a weight load did; ``str(report)`` is the human-readable summary that gets printed and logged."""

    source: str
    loaded: int = 0
    total: int = 0
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __str__(self) -> str:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" ... (+{len(keys) - 5})" if len(keys) > 5 else "") if keys else "none"

        return "\n".join(
            [
                f"weights: {self.source}",
                f"  loaded {self.loaded}/{self.total} encoder tensors",
                f"  missing: {few(self.missing)}",
                f"  unexpected (ignored): {few(self.unexpected)}",
                f"  shape mismatch (skipped): {few(self.mismatched)}",
                f"  first-conv adaptation: {'; '.join(self.adapted) or 'none'}",
                f"  expects normalisation mean={self.mean} std={self.std}",
            ]
        )


def weight_file_format(path: str | Path) -> str:
    """``"safetensors"``, ``"torch-zip"`` (``torch.save`` since 1.6) or ``"torch-legacy"``, judged by content.

    Extensions lie (``resnet20-12fca82f.th``, ``model_best.pth.tar``), so the first bytes decide. Raises
    ``ValueError`` naming the file when it is none of these.
    """
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "torch-zip"
    if len(head) >= 9 and head[8:9] == b"{":  # safetensors: 8-byte little-endian header length, then JSON
        return "safetensors"
    if head[:1] == b"\x80":  # a pickle protocol marker: torch.save's legacy (pre-1.6) format
        return "torch-legacy"
    raise ValueError(
        f"weights file {path} is neither a safetensors file nor a torch.save file (first bytes {head[:8]!r}); "
        "save a state dict with torch.save(model.state_dict(), ...) or safetensors"
    )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weight file safely and unwrap ``state_dict`` / ``model`` containers; tensors only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if weight_file_format(path) == "safetensors":
        from safetensors.torch import load_file

        obj: object = load_file(str(path))
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle refusing a class, or a damaged file
            raise ValueError(
                f"cannot read weights {path} safely ({type(err).__name__}: {str(err).splitlines()[0]}); "
                "save a plain state dict (torch.save(model.state_dict(), ...)) or a .safetensors file"
            ) from err
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} holds no state dict of tensors")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def adapt_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Adapt a pretrained first-conv kernel ``(O, C, k, k)`` to ``in_channels`` inputs.

    One channel: the sum over the pretrained inputs (a grey image is R = G = B, so the response is unchanged).
    Otherwise the pretrained kernel is tiled over the new channels and scaled by ``C / in_channels``, which
    keeps the expected activation magnitude (timm's rule; written here so it does not hang on timm's version).
    """
    c = weight.shape[1]
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = -(-in_channels // c)  # ceil
    return weight.repeat(1, repeats, 1, 1)[:, :in_channels] * (c / in_channels)


def strip_wrappers(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (``module.``, ``net.``, ``encoder.``, ``model.``) that all keys share.

    A whole segkit/smp model is cut down to its encoder: when some keys start with ``encoder.`` (or
    ``net.encoder.``), only those are kept.
    """
    while True:
        for prefix in SHARED_PREFIXES + SELECTING_PREFIXES:
            inner = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
            if inner and (len(inner) == len(state_dict) or prefix in SELECTING_PREFIXES):
                state_dict = inner
                break
        else:
            return state_dict


def key_spellings(key: str) -> list[str]:
    """Spellings of an encoder key to look for in a file, in order of preference.

    timm's ``features_only`` list wrapper renames top-level modules (``stages.0`` -> ``stages_0``); its getter
    wrapper (plain ViTs) keeps the whole model under ``model.``, which a file of the bare model lacks.
    """
    found = [key]
    head, _, rest = key.partition(".")
    if "_" in head:
        found.append(f"{head.replace('_', '.')}.{rest}")
    if head == "model" and rest:
        found.extend(key_spellings(rest))
    return found


def load_encoder_state(
    module: nn.Module,
    state_dict: dict[str, torch.Tensor],
    source: str,
    in_channels: int,
    first_conv: str | None = None,
    strict: bool = False,
) -> LoadReport:
    """Copy matching tensors of ``state_dict`` into ``module``; adapt the first conv to ``in_channels``.

    Raises:
        ValueError: in ``strict`` mode, when any encoder tensor is missing from the file.
    """
    state_dict = strip_wrappers(state_dict)
    target = module.state_dict()
    report = LoadReport(source=source, total=len(target))
    new_state, used = {}, set()
    for key, current in target.items():
        found = next((k for k in key_spellings(key) if k in state_dict), None)
        if found is None:
            report.missing.append(key)
            continue
        used.add(found)
        tensor = state_dict[found]
        is_first_conv = first_conv is not None and found == f"{first_conv}.weight"
        if tensor.shape != current.shape and tensor.ndim == 4 and tensor.shape[1] != current.shape[1]:
            takes_the_image = current.shape[1] == in_channels  # a deeper conv of another network is no first conv
            if is_first_conv or (takes_the_image and tensor.shape[0] == current.shape[0]):
                tensor = adapt_first_conv(tensor, in_channels).to(current.dtype)
                c = state_dict[found].shape[1]
                rule = "sum over input channels" if in_channels == 1 else f"repeat and scale by {c}/{in_channels}"
                report.adapted.append(f"{key}: {tuple(state_dict[found].shape)} -> {tuple(tensor.shape)} ({rule})")
        if tensor.shape != current.shape:
            report.mismatched.append(f"{key} {tuple(tensor.shape)} vs {tuple(current.shape)}")
            continue
        new_state[key] = tensor
    report.unexpected = [k for k in state_dict if k not in used]
    report.loaded = len(new_state)
    if strict and (report.missing or report.mismatched):
        raise ValueError(f"strict weight loading failed:\n{report}")
    if report.loaded == 0:
        raise ValueError(f"no tensor of {source} matches the encoder; is it the right architecture?\n{report}")
    module.load_state_dict(new_state, strict=False)
    return report


def _check_reachable(url: str, timeout: float = 3.0) -> None:
    """Raise ``OSError`` unless a TCP connection to ``url``'s host opens within ``timeout`` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise OSError("HF_HUB_OFFLINE is set")
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout):
        pass


def fetch_pretrained(model_name: str, tag: str) -> tuple[Path, str]:
    """Download (or find in the hub cache) timm's pretrained file for ``model_name`` and ``tag``.

    ``tag`` is ``"imagenet"`` (timm's default tag), a tag such as ``"fb_in22k_ft_in1k"``, or a full
    ``"name.tag"``. Without network this fails within seconds with :class:`WeightsUnavailableError`.
    """
    from timm.models import get_pretrained_cfg

    full = model_name if tag == "imagenet" else (tag if "." in tag else f"{model_name}.{tag}")
    cfg = get_pretrained_cfg(full)
    if cfg is None:
        raise ValueError(f"timm has no pretrained weights named {full!r}; see timm.list_pretrained('{model_name}*')")
    advice = (
        f"Could not fetch pretrained weights {full!r} (no network, or the hub is unreachable). "
        f"Download them on a machine with network, e.g. "
        f"`python -c \"import timm; timm.create_model('{full}', pretrained=True)\"` (they land in the Hugging Face "
        f"cache) or save `model.state_dict()` to a file, then pass weights=file:/path/to/weights.safetensors "
        f"(or copy the cache here)."
    )
    try:
        if cfg.hf_hub_id:
            from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

            filename = cfg.hf_hub_filename or "model.safetensors"
            cached = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(cached, str):
                return Path(cached), f"timm {full} (hub cache {cached})"
            _check_reachable(constants.ENDPOINT)  # fail in seconds instead of after the hub client's retries
            return Path(hf_hub_download(cfg.hf_hub_id, filename)), f"timm {full} ({cfg.hf_hub_id})"
        if cfg.url:
            from torch.hub import download_url_to_file, get_dir

            target = Path(get_dir()) / "checkpoints" / Path(cfg.url).name
            if not target.is_file():
                _check_reachable(cfg.url)
                target.parent.mkdir(parents=True, exist_ok=True)
                download_url_to_file(cfg.url, str(target), progress=False)
            return target, f"timm {full} ({cfg.url})"
    except Exception as err:
        raise WeightsUnavailableError(f"{advice}\nCause: {type(err).__name__}: {str(err).splitlines()[0]}") from None
    raise WeightsUnavailableError(advice)


WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt")


def weights_path(spec: str) -> Path | None:
    """The file a ``weights`` spec names, or ``None`` for a timm name: ``file:<path>``, and also a path typed
    without the prefix (an existing file, or a spec with a folder separator or a weight file's suffix), which
    was once looked up as a timm tag ("timm has no pretrained weights named 'r50.pth'")."""
    if spec.startswith("file:"):
        return Path(spec[len("file:") :]).expanduser()
    path = Path(spec).expanduser()
    if path.is_file() or "/" in spec or "\\" in spec or path.suffix.lower() in WEIGHT_FILE_SUFFIXES:
        return path
    return None


def resolve_weights(spec: str, model_name: str) -> tuple[dict[str, torch.Tensor], str]:
    """Turn a ``weights`` spec into a state dict and a description of its source."""
    if (path := weights_path(spec)) is not None:
        return read_state_dict(path), f"file {path}"
    path, source = fetch_pretrained(model_name, spec)
    return read_state_dict(path), source
