"""Binary mode end to end: a one-channel (sigmoid) U-Net trains, validates, predicts and evaluates as two classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from segkit import load_model
from segkit.inference import Predictor, evaluate, split_samples
from segkit.train import train


def write_discs(root: Path, n: int, seed: int) -> None:
    """Bright discs on dark noise; masks 0 (background) / 1 (disc)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    yy, xx = np.mgrid[:48, :48]
    for i in range(n):
        cy, cx, r = rng.integers(14, 34), rng.integers(14, 34), rng.integers(6, 12)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2).astype(np.uint8)
        image = rng.normal(60, 20, (48, 48)) + 120 * mask
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).convert("RGB").save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")


@pytest.mark.slow  # > 20 s: the default suite stays near 10 minutes
def test_one_channel_model_trains_and_scores_like_evaluation(compose_cfg, tmp_path: Path) -> None:
    write_discs(tmp_path / "discs" / "train", 16, seed=0)
    write_discs(tmp_path / "discs" / "val", 4, seed=1)
    cfg = compose_cfg(
        "data=folder", f"paths.data_dir={tmp_path / 'discs'}", "data.class_names=[background,disc]",
        "data.patch_size=null", "data.batch_size=4", "model=unet_small", "model.num_classes=1", "loss=dice_ce",
        "task.optimizer.lr=0.003", "trainer.max_epochs=12", "task.image_metrics=[hd95]",
        "callbacks.rich_progress_bar=null", "callbacks.prediction_grid.every_n_validations=1",
    )  # fmt: skip
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)

    model = load_model(run / "model")
    assert model.net.head.out_channels == 1  # one sigmoid channel...
    assert {"val/iou_disc", "val/iou_background", "val/dice_disc", "val/hd95"} <= set(metrics)  # ...two classes
    assert metrics["val/iou_disc"] > 0.6  # it learned the discs

    predictor = Predictor(model)
    sample = split_samples(cfg.data, "val")[0]
    probabilities = predictor.probabilities(np.asarray(sample["image"]))
    assert probabilities.shape == (2, 48, 48) and np.allclose(probabilities.sum(0), 1.0, atol=1e-5)
    assert set(np.unique(predictor.predict(np.asarray(sample["image"])))) <= {0, 1}
    scores = evaluate(predictor, split_samples(cfg.data, "val"), "val")
    for key in ("val/iou_disc", "val/pixel_error", "val/hd95"):
        assert scores[key] == pytest.approx(metrics[key], abs=0.02), key  # the same threshold and the same scores


def test_two_class_logits_is_the_sigmoid() -> None:
    from segkit.metrics.binary import two_class_logits

    z = torch.randn(2, 1, 3, 3)
    pair = two_class_logits(z)
    assert torch.allclose(pair.softmax(dim=1)[:, 1:], torch.sigmoid(z), atol=1e-6)
    assert torch.equal(pair.argmax(dim=1), (z[:, 0] > 0).long())
    three = torch.randn(2, 3, 3, 3)
    assert two_class_logits(three) is three
