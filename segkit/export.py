"""Export: ``python -m segkit.export ckpt=<run dir | .ckpt | model dir> output=<file.onnx | file.pt> [format=...]``.

The exported graph takes a normalised ``(B, C, H, W)`` float32 image and returns logits. ONNX graphs have a
dynamic batch dimension; same-padding U-Nets also export with dynamic height and width, valid-padding ones at
the tile size. An ONNX model under 2 GB keeps its weights inside the one ``.onnx`` file, so copying that file
is enough. Every export ends with a parity check: the largest |exported logits - eager logits| on random
inputs at two sizes and at batch 1 and 2, which must stay within ``tolerance`` (1e-4 in fp32).
"""

from __future__ import annotations

# ruff: noqa: E402 -- a command line is answered (--help, a typo) before the imports it runs with
from segkit.cli import answer_first

if __name__ == "__main__":  # ~2 s instead of the 10-18 s torch and Lightning take to import
    answer_first("export", "segkit.export")

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from segkit.cli import clear_errors
from segkit.inference.export import OPSET, PARITY_BATCHES, check_sizes, export, export_format, parity
from segkit.inference.model_files import load_model
from segkit.inference.sliding_window import default_tile
from segkit.quiet import silence_known_noise

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    """Export ``cfg.ckpt`` and check parity; returns ``{"path", "format", "dynamic", "max_abs_diff"}``."""
    silence_known_noise()
    loaded = load_model(cfg.ckpt)
    example = cfg.get("size") or default_tile(loaded.net, loaded.metadata.get("patch_size"))  # predict's tile
    fmt = export_format(cfg.get("format"), cfg.output)
    path, dynamic = export(loaded, fmt, cfg.output, example)
    sizes = list(dict.fromkeys(check_sizes(loaded.net, example)[:2]))  # a valid-padding network: one size
    diff = parity(loaded, fmt, path, sizes)
    what = f"ONNX opset {OPSET}" if fmt == "onnx" else "TorchScript (traced)"
    shape = "dynamic height/width" if dynamic else fixed_input(loaded.net, sizes[0])
    extra = Path(f"{path}.data")
    files = f"{path} and its weights {extra} (keep them together)" if extra.is_file() else f"{path} (one file)"
    log.info("Exported %s as %s, dynamic batch, %s: %s", loaded.source, what, shape, files)
    log.info("Parity at %s, batch %s: max |exported - eager| = %.2e (tolerance %.0e)",
             " and ".join(f"{h}x{w}" for h, w in sizes), " and ".join(map(str, PARITY_BATCHES)), diff,
             cfg.tolerance)  # fmt: skip
    if diff > cfg.tolerance:
        raise RuntimeError(f"exported logits differ from eager ones by {diff:.2e} > tolerance {cfg.tolerance}")
    return {"path": str(path), "format": fmt, "dynamic": dynamic, "max_abs_diff": diff}


def fixed_input(net, size: tuple[int, int]) -> str:
    """How to feed a graph exported at one size; a valid-padding network's logits are the input's centre, so
    its users must mirror-pad images by the margin it trims (as segkit's sliding window does)."""
    text = f"fixed input {size[0]}x{size[1]}"
    if getattr(net, "padding", "same") != "valid":
        return text
    out = net.output_size(size)
    return f"{text}, logits {out[0]}x{out[1]} (valid padding: the input's centre, {(size[0] - out[0]) // 2} px in)"


@hydra.main(version_base="1.3", config_path="conf", config_name="export")
def main(cfg: DictConfig) -> None:
    """Command-line entry (conf/export.yaml)."""
    clear_errors(run)(cfg)


if __name__ == "__main__":
    main()
