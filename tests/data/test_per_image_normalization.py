"""``data.normalization=image``: each image z-scored by its own statistics, the whole image's even for a training
crop, saved with the model so that predict and eval normalise as training did."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import numpy as np
import pytest
from PIL import Image

from segkit.data.datamodule import with_tail
from segkit.data.normalize import NormalizeAnyDepth, channel_stats
from segkit.inference import Predictor, split_samples
from segkit.inference.evaluation import evaluate
from segkit.inference.model_files import load_model
from segkit.train import train


def test_each_image_is_z_scored_per_channel_whatever_its_gain_and_offset() -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(0.2, 0.4, (32, 32, 3)).astype(np.float32)
    image[..., 2] *= 0.1  # a dim channel is scaled up as much as the others
    normalize = NormalizeAnyDepth([0.5] * 3, [0.25] * 3, per_image=True)
    out = normalize(image=image)["image"]
    np.testing.assert_allclose(out.mean(axis=(0, 1)), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 1)), 1.0, atol=1e-4)
    brighter = normalize(image=image * 2.0 + 0.1)["image"]
    np.testing.assert_allclose(brighter, out, atol=1e-4)
    eight_bit = (image * 255).round().astype(np.uint8)  # 8-bit images: the same figures from 0..255
    assert np.abs(normalize(image=eight_bit)["image"].mean(axis=(0, 1))).max() < 1e-4


def test_a_large_image_statistics_come_from_a_sample_of_its_pixels_that_matches_all_of_them() -> None:
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 30.0, (1040, 1388, 3)).clip(0, 255).astype(np.uint8)
    image[:520] //= 2  # uneven illumination: a sample from one part of the image would be wrong
    mean, std = channel_stats(image)
    whole = image.reshape(-1, 3) / 255.0
    np.testing.assert_allclose(mean, whole.mean(axis=0), rtol=1e-2)
    np.testing.assert_allclose(std, whole.std(axis=0), rtol=1e-2)


def test_a_training_crop_is_normalised_by_its_whole_image() -> None:
    """Top half 50, bottom half 200: z-scored as a whole, the top is -1; a crop z-scored alone would be 0 on
    average, and prediction (whole images) would then see other values than training did."""
    image = np.full((64, 64, 1), 200, dtype=np.uint8)
    image[:32] = 50
    image[:32, ::2] = 52  # a crop with some spread of its own
    top = [A.Crop(0, 0, 64, 32)]
    crop = with_tail(None, [0.5], [0.25], seed=0, head=top, per_image=True)(image=image)["image"]
    assert crop.shape == (1, 32, 64)
    assert float(crop.mean()) == pytest.approx(-1.0, abs=0.01)
    dataset_stats = with_tail(None, [0.5], [0.25], seed=0, head=top)(image=image)["image"]
    assert float(dataset_stats.mean()) == pytest.approx((51 / 255 - 0.5) / 0.25, abs=1e-3)


def write_lit_discs(root: Path, n: int, seed: int) -> None:
    """Bright discs on a darker ground, each image under its own gain (0.3x to 1x): what the network must
    learn is the disc, not the exposure."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    yy, xx = np.mgrid[0:48, 0:48]
    for i in range(n):
        cy, cx, r = rng.integers(14, 34), rng.integers(14, 34), rng.integers(6, 12)
        mask = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r**2).astype(np.uint8)
        image = (rng.normal(60, 15, (48, 48)) + 120 * mask) * rng.uniform(0.3, 1.0)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).convert("RGB").save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")


def test_a_per_image_run_saves_its_normalisation_and_predict_scores_as_validation_did(
    compose_cfg, tmp_path: Path
) -> None:
    write_lit_discs(tmp_path / "discs" / "train", 16, seed=0)
    write_lit_discs(tmp_path / "discs" / "val", 4, seed=1)
    cfg = compose_cfg(
        "data=folder", f"paths.data_dir={tmp_path / 'discs'}", "data.class_names=[background,disc]",
        "data.normalization=image", "data.patch_size=[32,32]", "data.batch_size=4", "model=unet_small",
        "task.optimizer.lr=0.003", "trainer.max_epochs=12", "callbacks.rich_progress_bar=null",
    )  # fmt: skip
    metrics = train(cfg)
    run = Path(cfg.paths.output_dir)
    assert (run / "predictions" / "final.png").is_file()  # pictures of z-scored images
    model = load_model(run / "model")
    assert model.metadata["normalization"] == "image"
    assert metrics["val/iou_disc"] > 0.6  # it learned the discs under changing gains

    predictor = Predictor(model)
    image = np.asarray(split_samples(cfg.data, "val")[0]["image"])
    tensor = predictor.to_tensor(image)
    np.testing.assert_allclose(tensor.mean(dim=(1, 2)).numpy(), 0.0, atol=1e-4)  # whole images, z-scored
    scores = evaluate(predictor, split_samples(cfg.data, "val"), "val")
    assert scores["val/iou_disc"] == pytest.approx(metrics["val/iou_disc"], abs=0.02)  # read as training read them


def test_an_unknown_normalisation_is_named(compose_cfg) -> None:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    with pytest.raises(
        InstantiationException, match=r"normalization must be one of \('dataset', 'image'\), got 'images'"
    ):
        instantiate(compose_cfg("data.normalization=images").data)
