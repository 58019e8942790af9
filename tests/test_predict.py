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

from segkit.inference import Predictor, load_model
from segkit.inference.model_files import LoadedModel
from segkit.inference.sliding_window import SlidingWindow, gaussian_importance, tile_starts
from segkit.models import UNet
from segkit.tasks import SegmentationTask


def test_one_tile_covering_the_image_equals_whole_image_prediction() -> None:
    """Also the default precision: a bare window runs the network as it is (fp32), not in bf16 autocast,
    which runs 9-16x slower on CPUs without bf16 kernels and would miss this tolerance."""
    net = UNet(num_classes=3, depth=3, base_channels=8).eval()
    image = torch.randn(3, 61, 75)
    window = SlidingWindow(net, (128, 128), channels_last=False)
    with torch.no_grad():
        torch.testing.assert_close(window(image), net(image[None])[0], atol=1e-5, rtol=0)


def test_tile_starts_and_gaussian_weights() -> None:
    assert tile_starts(100, 32, 0.5) == [0, 16, 32, 48, 64, 68]  # the last tile moved back inside the image
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
    for mode in ("hflip", "flips", "d4"):
        tta = SlidingWindow(conv, (24, 24), tta=mode, precision="fp32", channels_last=False)(image)
        torch.testing.assert_close(tta, plain, atol=1e-5, rtol=0)


def test_hflip_averages_the_image_and_its_mirror() -> None:
    conv = nn.Conv2d(3, 2, 3, padding=1)  # not mirror-symmetric: the mirror's logits differ
    image = torch.randn(3, 40, 52)
    window = SlidingWindow(conv, (40, 52), tta="hflip", precision="fp32", channels_last=False)
    with torch.no_grad():
        by_hand = (conv(image[None]) + conv(image[None].flip(-1)).flip(-1))[0] / 2
        torch.testing.assert_close(window(image), by_hand, atol=1e-5, rtol=0)
        assert not torch.allclose(conv(image[None])[0], by_hand, atol=1e-3)


def test_a_model_runs_the_tta_its_run_recorded_unless_told(trained_run: Path) -> None:
    model = load_model(trained_run)
    assert model.metadata["tta"] is None and len(Predictor(model).window.tta) == 1  # quickstart records none
    planned = LoadedModel(model.net, {**model.metadata, "tta": "flips"}, model.source)
    assert len(Predictor(planned).window.tta) == 4 and "as the model's run recorded" in Predictor(planned).describe()
    assert len(Predictor(planned, tta="none").window.tta) == 1 and len(Predictor(planned, tta="d4").window.tta) == 8
    with pytest.raises(ValueError, match="task.tta must be one of"):
        SegmentationTask(model.net, nn.CrossEntropyLoss(), torch.optim.SGD, num_classes=4, tta="mirror")
    with pytest.raises(ValueError, match="tta must be none, hflip, flips or d4 .*got 'vflip'"):  # as typed: not None
        Predictor(model, tta="vflip")


def test_a_tile_below_the_valid_networks_minimum_is_refused() -> None:
    net = UNet(num_classes=2, in_channels=1, depth=2, base_channels=4, padding="valid", norm=None).eval()
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


def test_inputs_sharing_a_stem_get_outputs_of_their_own(trained_run: Path, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from segkit.predict import run

    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(inputs / "a.png")
    Image.fromarray(rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)).save(inputs / "a.tif")
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(inputs / "b.png")
    cfg = OmegaConf.create({"ckpt": str(trained_run), "input": str(inputs), "output": str(tmp_path / "out"),
                            "tile": None, "overlap": 0.5, "tta": None, "device": "cpu", "tile_batch_size": 4,
                            "save_overlay": False, "save_probabilities": False})  # fmt: skip
    assert run(cfg)["images"] == 3
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.png")) == ["a_png.png", "a_tif.png", "b.png"]
    assert np.array(Image.open(out / "a_tif.png")).shape == (30, 50)


def test_bad_predict_requests_fail_before_any_work(trained_run: Path, tmp_path: Path) -> None:
    from segkit.inference.files import check_output_dir, list_inputs
    from segkit.inference.model_files import load_model

    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(image)
    with pytest.raises(ValueError, match="choose another output folder"):
        check_output_dir(tmp_path, list_inputs(str(image)))
    with pytest.raises(FileNotFoundError, match="matches no file"):
        list_inputs(str(tmp_path / "*.tif"))
    (tmp_path / ".DS_Store").write_bytes(b"Bud1")
    (tmp_path / "._a.png").write_bytes(b"Mac OS X metadata")  # a Mac's copy: each was warned about as corrupt
    assert list_inputs(str(tmp_path)) == [image]
    loaded = load_model(trained_run)
    four = LoadedModel(loaded.net, {**loaded.metadata, "in_channels": 4}, loaded.source)
    with pytest.raises(ValueError, match="takes 4 input channels"):
        Predictor(four)


def test_a_classifier_is_refused_with_where_its_scores_are(tmp_path: Path) -> None:
    from segkit.inference.model_files import inference_metadata
    from segkit.models import Classifier

    net = Classifier("unet", num_classes=2)
    model = LoadedModel(net, inference_metadata(net, "classification", ["ants", "bees"], None), tmp_path / "model")
    with pytest.raises(ValueError, match="is a classification model, and predict, eval and serve take segmentation"):
        Predictor(model)
