"""The U-Net paper's recipe (isbi2012_paper): overlap-tile validation on whole slices and weight-map training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from segkit.inference.sliding_window import SlidingWindow, mirror_pad_for_valid
from segkit.losses import DiceCELoss
from segkit.models import UNet
from segkit.tasks.segmentation import SegmentationTask
from segkit.train import train
from tests.conftest import SHARED_DATA, require_shared


def test_mirrored_single_tile_equals_the_sliding_window() -> None:
    net = UNet(num_classes=2, in_channels=1, depth=2, base_channels=4, padding="valid").eval()
    image = torch.randn(1, 1, 37, 50)
    padded = mirror_pad_for_valid(net, image)
    with torch.no_grad():
        logits = net(padded)[..., :37, :50]
    window = SlidingWindow(net, tile=padded.shape[-2:], sigma_scale=None, precision="fp32", channels_last=False)
    torch.testing.assert_close(logits[0], window(image[0]), atol=1e-5, rtol=1e-5)
    margin = (padded.shape[-1] - net.output_size(padded.shape[-2:])[1]) // 2
    assert torch.equal(padded[..., margin : margin + 50][..., margin : margin + 37, :], image)  # image in place
    # mirrored about the edge pixel (BORDER_REFLECT_101, as training crops): column -1 is column 1
    torch.testing.assert_close(padded[..., margin : margin + 37, margin - 1], image[..., 1])


def test_weight_maps_with_a_loss_that_ignores_them_is_an_error() -> None:
    net = UNet(num_classes=2, in_channels=1, depth=2, base_channels=4)
    task = SegmentationTask(net, DiceCELoss(), optimizer=torch.optim.Adam, num_classes=2)
    batch = {"image": torch.randn(2, 1, 16, 16), "mask": torch.zeros(2, 16, 16, dtype=torch.long),
             "weight": torch.ones(2, 16, 16)}  # fmt: skip
    with pytest.raises(ValueError, match="loss=weight_map_ce"):
        task.training_step(batch, 0)


def test_paper_recipe_trains_and_scores_whole_slices(compose_cfg, tmp_path: Path, monkeypatch) -> None:
    """A few steps of the recipe, shrunk: maps computed and cached, validation on full 512x512 slices."""
    require_shared(SHARED_DATA / "isbi2012_em")
    monkeypatch.setenv("SEGKIT_CACHE_DIR", str(tmp_path / "cache"))
    cfg = compose_cfg("+experiment=isbi2012_paper", "model.depth=2", "model.base_channels=4", "trainer.max_time=null",
                      "trainer.max_steps=4", "data.samples_per_epoch=4", "trainer.check_val_every_n_epoch=1",
                      "data.val_dataset.stems=[24]", "callbacks.rich_progress_bar=null")  # fmt: skip
    metrics = train(cfg)
    assert len(list((tmp_path / "cache" / "weight_maps").glob("*.npy"))) == 24  # one map per training slice
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert {"val/pixel_error", "val/iou_membrane", "val/adapted_rand_error"} <= set(saved)
    assert 0 < metrics["val/pixel_error"] < 1 and torch.isfinite(torch.tensor(metrics["val/loss"]))
