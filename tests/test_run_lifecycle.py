"""What a run hands over: last.ckpt holds the final weights however the run stopped, the best checkpoint is
the monitor's choice, metrics.json says which weights each figure comes from, model/ holds the weights the
config names, and inference runs the model as it was trained."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file

from segkit.inference import Predictor, evaluate, split_samples
from segkit.inference.model_files import best_checkpoint, load_model, precision_name
from segkit.metrics import metric_mode
from segkit.precision import cpu_precision
from segkit.train import train

TINY = [
    "data.train_dataset.num_samples=16",  # 4 steps an epoch at batch 4
    "data.val_dataset.num_samples=4",
    "data.batch_size=4",
    "callbacks.rich_progress_bar=null",
    "callbacks.last_checkpoint.every_n_train_steps=100",
]


def _net_weights(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    return {k[len("net.") :]: v for k, v in state.items() if k.startswith("net.")}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class StopAt(pl.Callback):
    """Stops mid-epoch at a global step, the way Lightning's Timer stops a max_time run (no validation)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def test_a_mid_epoch_stop_keeps_the_final_weights_and_scores_them(compose_cfg, tmp_path: Path) -> None:
    # last.ckpt is also written at step 4 (end of epoch 0): Lightning's own save_last then never refreshed it
    cfg = compose_cfg("+experiment=quickstart", "trainer.max_epochs=10", *TINY,
                      "callbacks.last_checkpoint.every_n_train_steps=4")  # fmt: skip
    metrics = train(cfg, extra_callbacks=[StopAt(6)])  # epoch 1, step 2 of 4: the last validation was at step 4
    run = tmp_path / "run"
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 6
    assert metrics["weights"]["val/"] == "final weights (global step 6)"
    assert metrics["weights"]["model/"] == metrics["weights"]["val/"]  # export_weights: final by default
    _assert_same(_net_weights(run / "checkpoints" / "last.ckpt"), load_file(run / "model" / "model.safetensors"))
    # eval of last.ckpt through the prediction path reproduces the final validation
    predictor = Predictor(run / "checkpoints" / "last.ckpt", tile=[64, 64])
    scores = evaluate(predictor, split_samples(cfg.data, "val"), "val")
    assert scores["val/miou"] == pytest.approx(metrics["val/miou"], abs=2e-3)
    assert json.loads((run / "model" / "config.json").read_text())["weights"]["weights"] == "final"


@pytest.mark.slow
def test_a_max_time_stop_leaves_the_final_step_in_last_ckpt(compose_cfg, tmp_path: Path) -> None:
    metrics = train(compose_cfg("+experiment=quickstart", "trainer.max_epochs=100000",
                                "trainer.max_time=00:00:00:08", "scheduler=poly", *TINY))  # fmt: skip
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert metrics["weights"]["val/"] == f"final weights (global step {last['global_step']})"
    assert last["global_step"] % 4 != 0 or last["global_step"] > 4  # stopped by the clock, after some steps


def test_best_checkpoint_is_the_monitors_choice_not_the_newest_file(compose_cfg, tmp_path: Path) -> None:
    metrics = train(compose_cfg("+experiment=quickstart", "trainer.max_epochs=3", *TINY))
    run = tmp_path / "run"
    chosen = metrics["weights"]["best/val/"].rsplit(": ", 1)[1]
    decoy = run / "checkpoints" / "epoch_999.ckpt"
    decoy.write_bytes((run / "checkpoints" / "last.ckpt").read_bytes())
    os.utime(decoy, (time.time() + 60, time.time() + 60))
    assert best_checkpoint(run) == (run / chosen).resolve() or best_checkpoint(run) == run / chosen
    assert "best/val/miou" in metrics and "val/miou" in metrics


def test_export_weights_best_hands_over_the_best_checkpoint(compose_cfg, tmp_path: Path) -> None:
    metrics = train(compose_cfg("+experiment=quickstart", "trainer.max_epochs=2", "callbacks.export_weights=best",
                                *TINY))  # fmt: skip
    run = tmp_path / "run"
    assert metrics["weights"]["model/"] == metrics["weights"]["best/val/"]
    _assert_same(_net_weights(best_checkpoint(run)), load_file(run / "model" / "model.safetensors"))
    assert json.loads((run / "model" / "config.json").read_text())["weights"]["weights"] == "best"


def test_export_weights_must_be_final_or_best(compose_cfg) -> None:
    with pytest.raises(ValueError, match="export_weights must be final or best"):
        train(compose_cfg("trainer.max_epochs=1", "callbacks.export_weights=newest", *TINY))


def test_monitor_direction_follows_the_optimized_metric(compose_cfg) -> None:
    assert metric_mode("val/miou") == "max" and metric_mode("val/adapted_rand_error") == "min"
    assert metric_mode("val/loss") == "min" and metric_mode("val/hd95") == "min"
    cfg = compose_cfg("optimized_metric=val/loss")
    assert cfg.callbacks.model_checkpoint.monitor == "val/loss"
    assert cfg.callbacks.model_checkpoint.mode == "min"


def test_inference_defaults_to_the_training_precision(trained_run: Path) -> None:
    """The shared quickstart run trains in trainer=cpu's precision (bf16 where the CPU has bf16 kernels, else
    fp32) and predicts in it; an fp32 run's model predicts in fp32."""
    model = load_model(trained_run)
    assert model.metadata["precision"] == precision_name(cpu_precision())
    saved = OmegaConf.to_container(OmegaConf.load(trained_run / ".hydra" / "config.yaml"))  # unresolved
    assert saved["trainer"]["precision"] == cpu_precision()  # what it trained in, not ${cpu_precision:}
    assert Predictor(model).precision == precision_name(cpu_precision())
    model.metadata["precision"] = "fp32"
    fp32 = Predictor(model, tile=[64, 64])
    assert fp32.precision == "fp32" and "as the model was trained" in fp32.describe()
    explicit = Predictor(model, tile=[64, 64], precision="fp32")
    image = (torch.rand(64, 64, 3) * 255).to(torch.uint8).numpy()
    assert torch.equal(fp32.logits(image), explicit.logits(image))  # exactly the fp32 output
    model.metadata.pop("precision")
    assert Predictor(model).precision == "fp32"  # a model that does not say: the exact one


def test_metrics_files_are_strict_json(tmp_path: Path) -> None:
    from segkit.metrics.output import write_metrics

    write_metrics({"val/iou_x": float("nan"), "val/miou": 0.5, "weights": {"val/": "final"}}, tmp_path / "m.json", "t")
    saved = json.loads((tmp_path / "m.json").read_text(), parse_constant=pytest.fail)  # NaN would reach here
    assert saved == {"val/iou_x": None, "val/miou": 0.5, "weights": {"val/": "final"}}


def test_the_metrics_path_is_printed_on_one_line(tmp_path: Path, capsys) -> None:
    """A log piped to a file must hold the path whole, to be copied; a table caption wrapped it at the table's
    width ("eval.jso" / "n")."""
    from segkit.metrics.output import write_metrics

    path = tmp_path / ("a_rather_long_run_directory_name_" * 3) / "metrics.json"
    write_metrics({"val/miou": 0.5}, path, "t")
    assert f"written to {path}" in capsys.readouterr().out.splitlines()


def test_a_fixed_seed_step_budgeted_run_repeats_exactly(compose_cfg, tmp_path: Path) -> None:
    weights = []
    for name in ("a", "b"):
        cfg = compose_cfg("+experiment=quickstart", "trainer.max_steps=6", "scheduler=poly", *TINY)
        cfg.paths.output_dir = str(tmp_path / name)
        train(cfg)
        weights.append(load_file(tmp_path / name / "model" / "model.safetensors"))
    _assert_same(*weights)


def test_the_training_crop_of_an_augmentation_config_reaches_the_metadata(compose_cfg) -> None:
    """isbi2012_paper crops 444x444 in aug/em_paper.yaml (data.patch_size is null): predict's default tile must
    be that crop, not 256x256."""
    from hydra.utils import instantiate

    from segkit.inference.model_files import inference_metadata

    cfg = compose_cfg("+experiment=isbi2012_paper")
    datamodule = instantiate(cfg.data, train_transform=instantiate(cfg.aug.train), val_transform=None)
    net = instantiate(cfg.model)
    meta = inference_metadata(net, "segmentation", ["interior", "membrane"], datamodule, "bf16-mixed")
    assert meta["patch_size"] == [444, 444] and meta["precision"] == "bf16"
