"""segkit.eval scores through the predict path; segkit.export writes ONNX / TorchScript that match eager."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from segkit.eval import run as eval_run
from segkit.export import run as export_run
from segkit.inference import Predictor
from segkit.inference.evaluation import confusion, evaluate, split_samples
from segkit.inference.model_files import load_model, precision_name
from segkit.precision import cpu_precision
from segkit.train import train
from tests.conftest import compose_command

TINY_RUN = ["data.train_dataset.num_samples=2", "data.val_dataset.num_samples=1", "data.batch_size=2",
            "callbacks.rich_progress_bar=null"]  # fmt: skip


def test_confusion_counts_by_hand() -> None:
    target = np.array([[0, 1, 1], [2, 255, 1]])
    pred = np.array([[0, 1, 0], [2, 2, 2]])
    expected = [[1, 0, 0], [1, 1, 1], [0, 0, 1]]  # the ignored pixel (255) counts nowhere
    assert confusion(target, pred, 3, 255).tolist() == expected


def test_eval_cli_reproduces_the_training_validation_from_the_run_alone(trained_run: Path, evaluated_run) -> None:
    """No data overrides: the run's own data config (4 validation images, not data/synthetic's 64), and the
    training precision (trainer=cpu's: bf16 where the CPU has bf16 kernels) by default."""
    done, out = evaluated_run
    scores = json.loads((out / "eval.json").read_text())
    trained = json.loads((trained_run / "metrics.json").read_text())
    for key in ("val/miou", "val/acc", "val/iou_background", "val/iou_disc"):
        assert scores[key] == pytest.approx(trained[key], abs=1e-3), key
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert len(rows) == 4 and {"image", "iou_disc", "dice_square", "pixel_error"} <= set(rows[0])
    assert (out / "confusion_matrix.png").is_file()
    assert "val/miou" in done.stdout  # the table
    log = (out / "eval.log").read_text()
    assert "the run's own data config" in log
    assert f"precision {precision_name(cpu_precision())} (as the model was trained)" in log
    json.loads((out / "eval.json").read_text(), parse_constant=pytest.fail)  # strict: no NaN


def test_eval_refuses_data_whose_classes_differ_from_the_model(trained_run: Path, tmp_path: Path) -> None:
    cfg = compose_command("eval", f"ckpt={trained_run}", "data=folder", "data.num_classes=2",
                          f"paths.data_dir={tmp_path}", f"output={tmp_path / 'eval'}")  # fmt: skip
    with pytest.raises(ValueError, match="the model predicts 4 classes .* has 2"):
        eval_run(cfg)


def test_eval_of_a_checkpoint_outside_a_run_asks_for_its_data(trained_run: Path, tmp_path: Path) -> None:
    import shutil

    ckpt = shutil.copy(trained_run / "checkpoints" / "last.ckpt", tmp_path / "loose.ckpt")
    with pytest.raises(ValueError, match="is not inside a run directory .* give one, e.g. data=folder"):
        eval_run(compose_command("eval", f"ckpt={ckpt}", f"output={tmp_path / 'eval'}"))


def test_evaluate_takes_arrays_made_in_code(trained_run: Path) -> None:
    from segkit.data import SyntheticShapes

    data = SyntheticShapes(3, (40, 56), seed=9)
    samples = [{"image": data.sample(i)[0], "mask": data.sample(i)[1], "name": f"s{i}"} for i in range(3)]
    scores = evaluate(Predictor(trained_run, precision="fp32"), samples, "test")
    assert 0.0 <= scores["test/miou"] <= 1.0 and "test/iou_triangle" in scores


def test_test_after_fit_scores_the_best_model_on_the_test_split(compose_cfg, tmp_path: Path) -> None:
    overrides = ["+experiment=quickstart", "trainer.max_epochs=1", "data.train_dataset.num_samples=8",
                 "data.val_dataset.num_samples=4", "data.test_dataset.num_samples=3", "data.batch_size=4",
                 "callbacks.rich_progress_bar=null", "test_after_fit=true"]  # fmt: skip
    metrics = train(compose_cfg(*overrides))
    assert 0.0 <= metrics["test/miou"] <= 1.0
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["test/miou"] == pytest.approx(metrics["test/miou"])
    assert len((tmp_path / "run" / "test" / "per_image.csv").read_text().splitlines()) == 1 + 3


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_parity_at_two_sizes_and_two_batch_sizes(trained_run: Path, tmp_path: Path, fmt: str) -> None:
    cfg = OmegaConf.create({"ckpt": str(trained_run), "format": fmt, "output": str(tmp_path / f"model.{fmt}"),
                            "size": None, "tolerance": 1e-4})  # fmt: skip
    result = export_run(cfg)
    assert result["dynamic"] and result["max_abs_diff"] <= 1e-4
    assert Path(result["path"]).stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"model.{fmt}"]  # one file: the weights are inside


def test_a_valid_padding_model_exports_at_the_tile_predict_uses(compose_cfg, tmp_path: Path, caplog) -> None:
    """Without ``size=``, export took the training crop or 256x256, predict's tile only for same padding: a
    paper-depth valid-padding U-Net trained on whole images was exported at 256x256, where its logits are
    68x68 (predict slides 380x380 tiles, 196x196 of logits), and a deeper one could not export at all. The log
    says what the fixed graph returns, and tracing it warns about nothing."""
    import logging
    import warnings

    from segkit.inference.sliding_window import default_tile

    size = ["data.train_dataset.image_size=[192,192]", "data.val_dataset.image_size=[192,192]"]  # depth 4: >= 188
    train(compose_cfg("+experiment=quickstart", "model.padding=valid", "model.depth=4", "model.base_channels=4",
                      "trainer.max_steps=1", *size, *TINY_RUN))  # fmt: skip
    cfg = OmegaConf.create({"ckpt": str(tmp_path / "run"), "format": "torchscript", "size": None,
                            "output": str(tmp_path / "m.pt"), "tolerance": 1e-4})  # fmt: skip
    with caplog.at_level(logging.INFO, logger="segkit.export"), warnings.catch_warnings():
        warnings.simplefilter("error")
        result = export_run(cfg)
    loaded = load_model(tmp_path / "run")
    assert default_tile(loaded.net, loaded.metadata.get("patch_size")) == (380, 380)
    assert not result["dynamic"] and result["max_abs_diff"] <= 1e-4
    assert "fixed input 380x380, logits 196x196 (valid padding: the input's centre, 92 px in)" in caplog.text
    assert "Parity at 380x380, batch 1 and 2" in caplog.text
    x = torch.randn(1, 3, 380, 380)
    with torch.no_grad():
        assert torch.jit.load(result["path"])(x).shape == (1, 4, 196, 196)


def test_onnx_file_alone_serves_batches(trained_run: Path, tmp_path: Path) -> None:
    """The .onnx copied somewhere else on its own still loads, and takes a batch of 3 at a new size."""
    import shutil

    import onnxruntime as ort

    from segkit.inference.export import export
    from segkit.inference.model_files import load_model

    loaded = load_model(trained_run)
    path, _ = export(loaded, "onnx", tmp_path / "a" / "m.onnx", (48, 48))
    alone = shutil.copy(path, tmp_path / "m.onnx")
    session = ort.InferenceSession(str(alone), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 40, 72)
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], loaded.net(x).numpy(), atol=1e-4)


@pytest.mark.slow  # > 20 s: the default suite stays near 10 minutes
def test_onnx_export_of_a_timm_encoder_has_dynamic_height_and_width(tmp_path: Path) -> None:
    import onnxruntime as ort

    from segkit.inference.export import export
    from segkit.inference.model_files import LoadedModel
    from segkit.models import UNet

    net = UNet(num_classes=2, encoder="test_resnet").eval()
    loaded = LoadedModel(net, {"in_channels": 3}, tmp_path)
    path, dynamic = export(loaded, "onnx", tmp_path / "r.onnx", (64, 64))
    session = ort.InferenceSession(str(path))
    x = torch.randn(2, 3, 77, 101)
    with torch.no_grad():
        np.testing.assert_allclose(session.run(None, {"image": x.numpy()})[0], net(x).numpy(), atol=1e-4)


@pytest.mark.slow
def test_eval_on_isbi_slices_reproduces_the_training_validation(compose_cfg, tmp_path: Path) -> None:
    """A short isbi2012 run; segkit.eval on slices 24-29 with one 512x512 tile gives its validation scores."""
    from hydra.utils import instantiate

    from tests.conftest import SHARED_DATA, require_shared

    require_shared(SHARED_DATA / "isbi2012_em")
    cfg = compose_cfg("+experiment=isbi2012", "trainer.max_epochs=4", "trainer.check_val_every_n_epoch=2",
                      "callbacks.rich_progress_bar=null", "data.num_workers=0")  # fmt: skip
    trained = train(cfg)
    predictor = Predictor(tmp_path / "run", tile=(512, 512), precision="bf16")
    samples = instantiate(cfg.data.val_dataset)(transform=None)
    out = tmp_path / "eval"
    scores = evaluate(predictor, [samples[i] for i in range(len(samples))], "val", out, report=True,
                      metric="val/adapted_rand_error")  # fmt: skip
    rows = {r["image"]: float(r["adapted_rand_error"]) for r in csv.DictReader(open(out / "per_image.csv"))}
    order = re.findall(r'<div class="row" id="image-\d+"><div><b>\d+\. ([^<]+)</b>', (out / "report.html").read_text())
    assert [rows[name] for name in order] == sorted(rows.values(), reverse=True)  # an error: the largest first
    assert scores["val/iou_membrane"] == pytest.approx(trained["val/iou_membrane"], abs=1e-3)
    assert scores["val/pixel_error"] == pytest.approx(trained["val/pixel_error"], abs=1e-3)
    assert scores["val/adapted_rand_error"] == pytest.approx(trained["val/adapted_rand_error"], abs=5e-3)


def test_the_export_format_follows_the_output_suffix() -> None:
    """``output=model.pt`` wrote an ONNX file (the default format) under a TorchScript name."""
    from segkit.inference.export import export_format

    assert export_format(None, "a/model.pt") == "torchscript" and export_format(None, "m.ONNX") == "onnx"
    assert export_format("onnx", "model.bin") == "onnx"  # a suffix that names nothing: the format given
    with pytest.raises(ValueError, match="format=onnx but output=model.pt names a torchscript file"):
        export_format("onnx", "model.pt")
    with pytest.raises(ValueError, match="its suffix '.bin' names no format; give format=onnx or format=torchscript"):
        export_format(None, "model.bin")


def test_validation_tiles_images_over_a_megapixel_as_eval_does(compose_cfg, tmp_path: Path, monkeypatch) -> None:
    """A 4000x3000 photo validated as one tile took 7.6 GB of memory with the 0.48 M-parameter U-Net (a wider
    network runs out of it), and eval tiled it anyway. Scaled down here: the limit is 48x48 pixels, the
    images 80x80, the crop 32x32. Validation, the prediction grid and eval all see 32x32 tiles, and the run's
    final validation scores what eval scores."""
    from conftest import write_pairs

    for module in ("segkit.tasks.segmentation", "segkit.inference.predictor"):
        monkeypatch.setattr(f"{module}.WHOLE_IMAGE_PIXELS", 48 * 48)
    write_pairs(tmp_path / "data" / "train", n=4, size=(80, 80))
    write_pairs(tmp_path / "data" / "val", n=2, size=(80, 80))

    class InputSizes(pl.Callback):
        """The largest input the network sees outside training."""

        def __init__(self) -> None:
            self.largest = (0, 0)

        def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            def record(module: torch.nn.Module, args: tuple) -> None:
                if not module.training:
                    self.largest = max(self.largest, tuple(args[0].shape[-2:]))

            pl_module.net.register_forward_pre_hook(record)

    sizes = InputSizes()
    cfg = compose_cfg(f"paths.data_dir={tmp_path / 'data'}", "data=folder", "data.num_classes=3",
                      "data.patch_size=[32,32]", "data.batch_size=2", "trainer.max_steps=4",
                      "callbacks.rich_progress_bar=null")  # fmt: skip
    metrics = train(cfg, extra_callbacks=[sizes])
    assert sizes.largest == (32, 32)
    predictor = Predictor(load_model(Path(cfg.paths.output_dir) / "model"), device="cpu")
    scores = evaluate(predictor, split_samples(cfg.data, "val"), "val")
    for key in ("val/miou", "val/iou_class_2", "val/pixel_error"):
        assert scores[key] == pytest.approx(metrics[key], abs=1e-4), key
