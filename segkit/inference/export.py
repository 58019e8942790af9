"""Export to ONNX or TorchScript, with a parity check against eager PyTorch.

The exported graph takes a normalised ``(B, C, H, W)`` float32 image and returns logits. ONNX graphs have a
dynamic batch dimension; same-padding U-Nets also export with dynamic height and width, valid-padding ones at
the tile size. An ONNX model under 2 GB keeps its weights inside the one ``.onnx`` file, so copying that file
is enough. Every export ends with a parity check: the largest |exported logits - eager logits| on random
inputs at two sizes and at batch 1 and 2, which must stay within ``tolerance`` (1e-4 in fp32).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from segkit.inference.model_files import LoadedModel

FORMATS = ("onnx", "torchscript")
SUFFIX_FORMATS = {".onnx": "onnx", ".pt": "torchscript", ".pth": "torchscript", ".ts": "torchscript",
                  ".torchscript": "torchscript"}  # fmt: skip
OPSET = 18
PARITY_BATCHES = (1, 2)
ONNX_INLINE_LIMIT = 2**31  # protobuf's 2 GB: larger models need an external weights file


class LogitsOnly(nn.Module):
    """The network with only its mask logits as output (a multi-task U-Net also returns class logits)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Mask logits ``(B, K, H', W')``."""
        out = self.net(image)
        return out[0] if isinstance(out, tuple) else out


def check_sizes(net: nn.Module, example_hw: Sequence[int]) -> tuple[tuple[int, int], tuple[int, int], bool]:
    """(example size, second parity size, dynamic?) for a network."""
    h, w = int(example_hw[0]), int(example_hw[1])
    if getattr(net, "padding", "same") == "valid":
        net.output_size((h, w))  # a clear error if the tile is too small for the network
        return (h, w), (h, w), False
    stride = int(getattr(net, "total_stride", 32))
    return (h, w), (h + stride + 3, w + 2 * stride - 5), True  # the second size is not a stride multiple


def export_format(fmt: str | None, output: str | Path) -> str:
    """The format to write: ``fmt``, else the one the output's suffix names (``.onnx``; ``.pt``, ``.pth``,
    ``.ts``: TorchScript). A ``fmt`` that the suffix contradicts is refused: ``output=model.pt`` used to get an
    ONNX file, the default format, under a name every reader takes for TorchScript."""
    suffix = Path(output).suffix.lower()
    named = SUFFIX_FORMATS.get(suffix)
    if fmt is None:
        if named is None:
            raise ValueError(f"output={output}: its suffix {suffix!r} names no format; give format=onnx or "
                             "format=torchscript, or end the name in .onnx or .pt")  # fmt: skip
        return named
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    if named is not None and named != fmt:
        raise ValueError(f"format={fmt} but output={output} names a {named} file: change one of them")
    return fmt


def export(
    loaded: LoadedModel, fmt: str, output: str | Path, example_hw: Sequence[int], batch_size: int = 2
) -> tuple[Path, bool]:
    """Write ``loaded.net`` as ONNX or TorchScript to ``output``; returns (path, dynamic height/width?).

    The example batch has 2 images: ``torch.export`` fixes any dimension whose example size is 1.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    net = LogitsOnly(loaded.net.float().eval()).eval()
    (h, w), _, dynamic = check_sizes(loaded.net, example_hw)
    x = torch.rand(batch_size, int(loaded.metadata["in_channels"]), h, w)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{output}.data").unlink(missing_ok=True)  # an earlier export's weights file would mislead
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is deprecated.*")  # jit.trace: still the TorchScript path
        warnings.filterwarnings("ignore", message="Converting a tensor to a Python boolean")  # decoder's size check
        if not dynamic:  # a valid-padding network's output size becomes a constant: right at its one size
            warnings.filterwarnings("ignore", message="Converting a tensor to a Python integer")
        if fmt == "torchscript":
            torch.jit.trace(net, x).save(str(output))
        else:
            dims = {0: torch.export.Dim("batch", min=1, max=1024)}
            if dynamic:
                stride = int(getattr(loaded.net, "total_stride", 32))
                dims[2] = torch.export.Dim("height", min=stride, max=16384)
                dims[3] = torch.export.Dim("width", min=stride, max=16384)
            inline = sum(p.numel() * p.element_size() for p in net.parameters()) < ONNX_INLINE_LIMIT
            torch.onnx.export(net, (x,), str(output), input_names=["image"], output_names=["logits"], dynamo=True,
                              opset_version=OPSET, dynamic_shapes={"image": dims}, external_data=not inline,
                              verbose=False)  # fmt: skip
    return output, dynamic


def parity(loaded: LoadedModel, fmt: str, path: str | Path, sizes: Sequence[Sequence[int]]) -> float:
    """Largest |exported - eager| logit difference over random inputs of ``sizes``, at batch 1 and 2."""
    net = LogitsOnly(loaded.net.float().eval()).eval()
    channels = int(loaded.metadata["in_channels"])
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is deprecated.*")
            exported = torch.jit.load(str(path))
        run = lambda x: exported(x).numpy()  # noqa: E731
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        run = lambda x: session.run(None, {"image": x.numpy()})[0]  # noqa: E731
    worst = 0.0
    generator = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for (h, w), batch in ((size, batch) for size in sizes for batch in PARITY_BATCHES):
            x = torch.randn(batch, channels, int(h), int(w), generator=generator)
            worst = max(worst, float(np.abs(run(x) - net(x).numpy()).max()))
    return worst
