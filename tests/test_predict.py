"""Sliding-window prediction, the predict CLI and its bad-input handling."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from segkit.model_io import LoadedModel
from segkit.models import UNet
from segkit.predict import Predictor
from segkit.sliding_window import SlidingWindow, gaussian_importance, tile_starts


def test_one_tile_covering_the_image_equals_whole_image_prediction() -> None:
    net = UNet(num_classes=3, depth=3, base_channels=8).eval()
    image = torch.randn(3, 61, 75)
    window = SlidingWindow(net, (128, 128), precision="fp32", channels_last=False)
    with torch.no_grad():
        torch.testing.assert_close(window(image), net(image[None])[0], atol=1e-5, rtol=0)


class Constant(nn.Module):
    """Logits (2.0, -1.0) everywhere, whatever the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.empty(x.shape[0], 2, *x.shape[-2:])
        out[:, 0], out[:, 1] = 2.0, -1.0
        return out


def test_gaussian_blending_of_a_constant_model_is_seam_free() -> None:
    window = SlidingWindow(Constant(), (32, 32), overlap=0.5, precision="fp32", channels_last=False)
    logits = window(torch.zeros(1, 100, 77))
    assert logits.shape == (2, 100, 77)
    torch.testing.assert_close(logits[0], torch.full((100, 77), 2.0), atol=1e-6, rtol=0)
    assert tile_starts(100, 32, 0.5) == [0, 16, 32, 48, 64, 68]
    weights = gaussian_importance((32, 32))
    assert weights.max() == 1.0 and weights.min() == pytest.approx(1e-3)  # sigma = tile / 8, floored


def test_tta_of_a_flip_equivariant_network_equals_no_tta() -> None:
    conv = nn.Conv2d(3, 2, 3, padding=1)
    with torch.no_grad():  # a kernel symmetric under all 8 symmetries of the square: D4-equivariant
        k = conv.weight
        k.copy_((k + k.flip(-1) + k.flip(-2) + k.flip(-2, -1)) / 4)
        k.copy_((k + k.transpose(-2, -1)) / 2)
    image = torch.randn(3, 40, 52)
    plain = SlidingWindow(conv, (24, 24), precision="fp32", channels_last=False)(image)
    for mode in ("flips", "d4"):
        tta = SlidingWindow(conv, (24, 24), tta=mode, precision="fp32", channels_last=False)(image)
        torch.testing.assert_close(tta, plain, atol=1e-5, rtol=0)


def test_valid_padding_overlap_tile_covers_the_whole_image() -> None:
    net = UNet(num_classes=2, in_channels=1, depth=2, base_channels=4, padding="valid", norm=None).eval()
    window = SlidingWindow(net, (60, 60), precision="fp32", channels_last=False)
    logits = window(torch.randn(1, 70, 45))
    assert logits.shape == (2, 70, 45) and torch.isfinite(logits).all()
    with pytest.raises(ValueError, match="too small"):
        SlidingWindow(net, (20, 20))


def test_a_1040x1388_rgba_image_gives_a_1040x1388_mask(trained_run: Path, tmp_path: Path) -> None:
    rgba = np.random.default_rng(0).integers(0, 256, (1040, 1388, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "big.png")
    predictor = Predictor(trained_run, tile=(256, 256), tile_batch_size=8)
    mask = predictor.predict(predictor.read(tmp_path / "big.png"))
    assert mask.shape == (1040, 1388) and mask.dtype == np.uint8 and mask.max() < 4


def test_predict_cli_writes_masks_overlays_probabilities_and_skips_bad_files(trained_run: Path,
                                                                            tmp_path: Path) -> None:  # fmt: skip
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (70, 90, 3), dtype=np.uint8)).save(inputs / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (50, 64), dtype=np.uint8)).save(inputs / "grey.png")
    (inputs / "broken.png").write_bytes(b"not a png")
    (inputs / "notes.txt").write_text("hello")
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "segkit.predict", f"ckpt={trained_run}", f"input={inputs}", f"output={tmp_path / 'out'}",
         "tta=flips", "save_probabilities=true", "precision=fp32"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    out = tmp_path / "out"
    mask = np.array(Image.open(out / "rgb.png"))
    assert mask.shape == (70, 90) and Image.open(out / "rgb.png").mode == "P"
    assert np.array(Image.open(out / "grey.png")).shape == (50, 64)
    probs = np.load(out / "rgb_probs.npy")
    assert probs.shape == (4, 70, 90) and probs.dtype == np.float16
    np.testing.assert_allclose(probs.astype(np.float32).sum(0), 1.0, atol=5e-3)
    assert (out / "rgb_overlay.png").is_file()
    assert "broken.png" in output and "2 image(s) written" in output and "2 skipped" in output
    assert "images/s" in output


def test_bad_predict_requests_fail_before_any_work(trained_run: Path, tmp_path: Path) -> None:
    from segkit.model_io import load_model
    from segkit.predict import check_output_dir, list_inputs

    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    with pytest.raises(ValueError, match="choose another output folder"):
        check_output_dir(tmp_path, list_inputs(str(image)))
    with pytest.raises(FileNotFoundError, match="matches no file"):
        list_inputs(str(tmp_path / "*.tif"))
    loaded = load_model(trained_run)
    four = LoadedModel(loaded.net, {**loaded.metadata, "in_channels": 4}, loaded.source)
    with pytest.raises(ValueError, match="takes 4 input channels"):
        Predictor(four)
