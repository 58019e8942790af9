"""Inference speed: segkit's predict path against smp's eager model and MONAI's sliding window.

    NO_ALBUMENTATIONS_UPDATE=1 python benchmarks/predict.py --data-dir ../shared/data [--rounds 5]
    NO_ALBUMENTATIONS_UPDATE=1 python benchmarks/predict.py --big 8000      # memory of an 8000x8000 image

1. Whole-slice throughput: the 30 ISBI-2012 slices (512x512, grey), batch 1, one tile per slice, files
   read beforehand and nothing written. segkit: ``Predictor`` (normalisation included) around
   ``UNet(encoder="resnet34")``; smp: ``smp.Unet("resnet34")`` called eagerly on the normalised tensor. Each
   in fp32 and in bf16 autocast + channels_last, so the ratios compare like with like. Same architecture,
   random init (weights do not change the speed).
2. Sliding window, fp32, on a 1024x1024 mosaic of four slices: segkit's ``SlidingWindow`` against MONAI's
   ``sliding_window_inference`` with the same tile (256), overlap (0.5), Gaussian weights (sigma = tile/8)
   and tile batch (4), on the same network; prints the speed ratio and the largest output difference.
Rounds alternate between the contenders; figures are medians. MONAI is needed for part 2 only
(``pip install monai``; not a segkit dependency).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from segkit.inference import Predictor
from segkit.inference.model_files import LoadedModel
from segkit.inference.sliding_window import SlidingWindow
from segkit.models import UNet

MEAN, STD = [0.5], [0.25]


def metadata(net: UNet, tile: int) -> dict:
    return {"task": "segmentation", "num_classes": 2, "class_names": ["interior", "membrane"],
            "palette": [[0, 0, 0], [255, 0, 0]], "in_channels": 1, "mean": MEAN, "std": STD,
            "patch_size": [tile, tile], "intensity": None, "color_mode": "gray", "padding": net.padding}  # fmt: skip


def timed(fn, items) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - start


def throughput(slices: list[np.ndarray], rounds: int) -> None:
    """segkit's Predictor and smp's eager model, each in fp32 and in bf16 autocast + channels_last: the
    same-precision ratios, and the mixed one (segkit bf16 against smp fp32) the older README quoted."""
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    net = UNet(2, 1, encoder="resnet34").eval()
    peer = smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=2).eval()
    tensors = [((torch.from_numpy(s).float().permute(2, 0, 1) / 255 - MEAN[0]) / STD[0])[None] for s in slices]
    peer_last = smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=2).eval()
    peer_last = peer_last.to(memory_format=torch.channels_last)

    def peer_fp32(x: torch.Tensor) -> None:
        with torch.inference_mode():
            peer(x)

    def peer_bf16(x: torch.Tensor) -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            peer_last(x.contiguous(memory_format=torch.channels_last))

    contenders = {}
    for precision in ("fp32", "bf16"):
        ours = Predictor(LoadedModel(net, metadata(net, 512), Path(".")), tile=(512, 512), tile_batch_size=1,
                         precision=precision, device="cpu")  # fmt: skip
        contenders[f"segkit {precision}"] = (ours.logits, slices)
    contenders["smp fp32"] = (peer_fp32, tensors)
    contenders["smp bf16"] = (peer_bf16, tensors)
    for fn, items in contenders.values():
        fn(items[0])  # warm-up
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, (fn, items) in contenders.items():
            times[name].append(len(items) / timed(fn, items))
    speed = {name: statistics.median(values) for name, values in times.items()}
    print("whole 512x512 slices, batch 1, img/s (median of rounds): "
          + ", ".join(f"{name} {value:.2f}" for name, value in speed.items()))  # fmt: skip
    print(f"  same precision: fp32 {speed['segkit fp32'] / speed['smp fp32']:.2f}x, "
          f"bf16 + channels_last {speed['segkit bf16'] / speed['smp bf16']:.2f}x; "
          f"mixed (segkit bf16 against smp fp32): {speed['segkit bf16'] / speed['smp fp32']:.2f}x")  # fmt: skip


def sliding(slices: list[np.ndarray], rounds: int) -> None:
    from monai.inferers import sliding_window_inference

    torch.manual_seed(0)
    net = UNet(2, 1, encoder="resnet34").eval()
    top = np.concatenate(slices[:2], axis=1)
    mosaic = np.concatenate([top, np.concatenate(slices[2:4], axis=1)], axis=0)  # 1024x1024x1
    x = (torch.from_numpy(mosaic).float().permute(2, 0, 1) / 255 - MEAN[0]) / STD[0]
    ours = SlidingWindow(net, (256, 256), overlap=0.5, sigma_scale=0.125, tile_batch_size=4, precision="fp32",
                         channels_last=False)  # fmt: skip

    def theirs(image: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return sliding_window_inference(image[None], (256, 256), 4, net, overlap=0.5, mode="gaussian",
                                            sigma_scale=0.125)[0]  # fmt: skip

    a, b = ours(x), theirs(x)
    diff = float((a - b).abs().max())
    times = {"segkit": [], "monai": []}
    for _ in range(rounds):
        times["segkit"].append(timed(ours, [x]))
        times["monai"].append(timed(theirs, [x]))
    seg, ref = statistics.median(times["segkit"]), statistics.median(times["monai"])
    print(
        f"sliding window 1024x1024, tile 256, overlap 0.5, Gaussian, fp32: segkit {seg:.2f} s | MONAI {ref:.2f} s "
        f"| speed ratio {ref / seg:.2f}x | max |segkit - MONAI| = {diff:.1e}"
    )


def big(size: int) -> None:
    net = UNet(2, 1, depth=3, base_channels=16).eval()
    predictor = Predictor(LoadedModel(net, metadata(net, 512), Path(".")), tile=(512, 512), tile_batch_size=4,
                          device="cpu")  # fmt: skip
    image = np.random.default_rng(0).integers(0, 256, (size, size, 1), dtype=np.uint8)
    start = time.perf_counter()
    mask = predictor.predict(image)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"{size}x{size} grey image, UNet-small, tile 512: mask {mask.shape} in {seconds:.0f} s, "
        f"peak RSS {peak:.0f} MiB (image {image.nbytes / 2**20:.0f} MiB, logits accumulator "
        f"{2 * 4 * size * size / 2**20:.0f} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--big", type=int, default=0, help="only measure one image of this size")
    parser.add_argument("--only", choices=["throughput", "window"], help="run one part")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.big:
        big(args.big)
        return
    from segkit.data.io import list_images, read_image

    images = list_images(args.data_dir / "isbi2012_em" / "train" / "images")
    slices = [read_image(p, "gray") for p in images.values()]
    if args.only != "window":
        throughput(slices, args.rounds)
    if args.only != "throughput":
        sliding(slices, args.rounds)


if __name__ == "__main__":
    main()
