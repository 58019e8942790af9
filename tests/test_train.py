"""train(cfg) end to end: smoke run, run-directory contents, resume, bad input before training, learning."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from segkit.metrics import strict_json
from segkit.train import train

TINY = [
    "data.train_dataset.num_samples=16",
    "data.val_dataset.num_samples=6",
    "data.batch_size=4",
    "callbacks.rich_progress_bar=null",
]


def test_fast_dev_run_through_train(compose_cfg) -> None:
    metrics = train(compose_cfg("+debug=fast_dev_run", *TINY))
    assert 0.0 <= metrics["val/miou"] <= 1.0
    assert set(metrics) >= {"val/loss", "val/miou", "val/dice", "val/acc", "val/iou_disc"}


def test_run_directory_holds_checkpoints_logs_pictures_and_metrics(compose_cfg, tmp_path: Path) -> None:
    metrics = train(compose_cfg("+experiment=quickstart", "trainer.max_epochs=2", *TINY))
    run = tmp_path / "run"
    saved = json.loads((run / "metrics.json").read_text())
    assert saved.pop("weights") == metrics.pop("weights")
    assert saved == pytest.approx(strict_json(metrics))  # an undefined score (NaN) is saved as null
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert len(list((run / "checkpoints").glob("epoch_*.ckpt"))) == 1  # the best by val/miou
    # a grid every 5th validation, and the final validations' named after the weights they show
    assert sorted(p.name for p in (run / "predictions").iterdir()) == ["best.png", "epoch_000.png", "final.png"]
    assert (run / "curves.png").is_file()
    header = (run / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss_epoch" in header and "val/miou" in header
    assert not list(run.rglob("*.tmp"))  # atomic writes leave no temporary files


def test_resume_from_last_checkpoint_continues_the_step_count(compose_cfg, tmp_path: Path) -> None:
    train(compose_cfg("trainer.max_epochs=1", *TINY))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    first = torch.load(last, weights_only=True)
    assert first["global_step"] == 4  # written again when training ends, so nothing after the last epoch is lost
    train(compose_cfg("trainer.max_epochs=2", "ckpt_path=last", *TINY))
    resumed = torch.load(last, weights_only=True)
    assert resumed["global_step"] == 8


def test_a_checkpoint_with_other_optimizer_groups_is_refused_by_name(compose_cfg, tmp_path: Path) -> None:
    """A run written with norms and biases decayed (one group) resumes only with the same setting; with the
    default (two groups) the error names the file and the key, before Lightning reaches torch's
    ``Optimizer.load_state_dict``: through ``segkit.train`` and through a plain ``Trainer.fit``, while
    ``validate`` (weights only) still takes the checkpoint."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    train(compose_cfg("trainer.max_epochs=1", "task.decay_norms_and_biases=true", *TINY))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    refused = r"last\.ckpt: .* task\.decay_norms_and_biases=true"
    with pytest.raises(ValueError, match=refused):
        train(compose_cfg("trainer.max_epochs=2", "ckpt_path=last", *TINY))
    cfg = compose_cfg(*TINY)
    datamodule, task = instantiate(cfg.data), instantiate(cfg.task, net=instantiate(cfg.model), _convert_="all")
    trainer = pl.Trainer(max_epochs=2, logger=False, enable_progress_bar=False, default_root_dir=tmp_path / "plain")
    assert trainer.validate(task, datamodule=datamodule, ckpt_path=last, verbose=False)
    with pytest.raises(ValueError, match=refused):
        trainer.fit(task, datamodule=datamodule, ckpt_path=last)
    train(compose_cfg("trainer.max_epochs=2", "ckpt_path=last", "task.decay_norms_and_biases=true", *TINY))
    assert torch.load(last, weights_only=True)["global_step"] == 8


def test_a_checkpoint_of_another_network_is_refused_by_name(compose_cfg, tmp_path: Path) -> None:
    """``ckpt_path=last`` with ``model.base_channels`` changed met torch's "size mismatch" line per tensor."""
    train(compose_cfg("trainer.max_steps=1", "model.base_channels=8", *TINY))
    refused = (r"last\.ckpt holds another network than this run builds: \d+ of its \d+ network tensors differ "
               r"\(e\.g\. net\.encoder\..*: \(8, 3, 3, 3\) there, \(4, 3, 3, 3\) here\)")  # fmt: skip
    with pytest.raises(ValueError, match=refused):
        train(compose_cfg("trainer.max_steps=2", "model.base_channels=4", "ckpt_path=last", *TINY))


def test_a_one_image_training_split_under_batchnorm_says_so(compose_cfg, tmp_path: Path) -> None:
    """``data.val_fraction=0.95`` of a small folder left one training image; the error said "training with
    batch size 1 ... raise data.batch_size", which the user had set to 2."""
    from conftest import write_pairs

    write_pairs(tmp_path / "train", n=3, size=(64, 64), values=(0, 1))
    cfg = compose_cfg("data=folder", f"paths.data_dir={tmp_path}", "data.val_dataset=null", "data.val_fraction=0.5",
                      "data.patch_size=[64,64]", "data.batch_size=2", "+debug=fast_dev_run")  # fmt: skip
    with pytest.raises(ValueError, match=r"the training split holds 1 image, so every batch holds 1.*val_fraction"):
        train(cfg)


def test_folder_data_trains_and_bad_data_fails_before_training(compose_cfg, synthetic_dir: Path) -> None:
    folder = [f"paths.data_dir={synthetic_dir}", "data=folder", "data.num_classes=3", "data.batch_size=2"]
    metrics = train(compose_cfg(*folder, "+debug=fast_dev_run", "callbacks.rich_progress_bar=null"))
    assert "val/iou_class_2" in metrics
    (synthetic_dir / "val" / "masks" / "1.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"val/images/1\.png"):
        train(compose_cfg(*folder, "+debug=fast_dev_run"))


def test_an_smp_model_trains_and_validates_images_of_any_size(compose_cfg, synthetic_dir: Path) -> None:
    """``model=smp_unet`` side by side: a folder's whole 32x48 validation images are no multiple of 32 (smp's
    stride), which smp's Unet takes since 0.6 (its decoder resizes to each skip) and its other models refuse."""
    folder = [f"paths.data_dir={synthetic_dir}", "data=folder", "data.num_classes=3", "data.batch_size=2"]
    smp_unet = ["model=smp_unet", "model.encoder_name=resnet18", "callbacks.rich_progress_bar=null"]
    metrics = train(compose_cfg(*folder, *smp_unet, "+debug=fast_dev_run"))
    assert 0.0 <= metrics["val/miou"] <= 1.0 and "val/iou_class_2" in metrics


def test_missing_resume_checkpoint_is_a_clear_error(compose_cfg, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        train(compose_cfg("ckpt_path=last", "+debug=fast_dev_run", *TINY))


@pytest.mark.slow
def test_a_few_dozen_steps_learn_well_above_chance(compose_cfg) -> None:
    """320 steps on SyntheticShapes must lift mIoU far above an untrained net's (about 0.1-0.25)."""
    untrained = train(compose_cfg("+experiment=quickstart", "trainer.max_epochs=0", "callbacks.rich_progress_bar=null"))
    metrics = train(
        compose_cfg(
            "+experiment=quickstart",
            "data.train_dataset.num_samples=512",
            "aug=light",
            "trainer.max_epochs=10",
            "callbacks.rich_progress_bar=null",
        )
    )
    assert untrained["val/miou"] < 0.3
    assert metrics["val/miou"] > 0.45 and metrics["val/miou"] - untrained["val/miou"] > 0.2


def test_timm_encoder_trains_through_the_cli_config(compose_cfg) -> None:
    metrics = train(compose_cfg("model=unet", "model.encoder=test_convnext", "+debug=fast_dev_run", *TINY))
    assert 0.0 <= metrics["val/miou"] <= 1.0


def test_pretrained_weights_set_normalisation_and_encoder_lr(compose_cfg, tmp_path: Path) -> None:
    import timm

    from segkit.train import weights_normalization

    path = tmp_path / "test_resnet.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), path)
    cfg = compose_cfg("model=unet", "model.encoder=test_resnet", f"model.weights=file:{path}", "data.mean=null",
                      "scheduler=none")  # no trainer here, so no budget for a schedule  # fmt: skip
    from hydra.utils import instantiate

    net = instantiate(cfg.model)
    expected = timm.create_model("test_resnet").pretrained_cfg
    assert weights_normalization(net, cfg.data) == {"mean": list(expected["mean"]), "std": list(expected["std"])}
    cfg.data.mean = [0.1, 0.2, 0.3]
    assert weights_normalization(net, cfg.data) == {}  # an explicit config value wins
    cfg.task.encoder_lr_mult = 0.1
    task = instantiate(cfg.task, net=net, _convert_="all")
    groups = task.configure_optimizers()["optimizer"].param_groups
    assert [g["lr"] for g in groups] == pytest.approx([0.0001, 0.0001, 0.001, 0.001])  # each: decayed, not
    assert [g["weight_decay"] for g in groups] == [0.0001, 0.0, 0.0001, 0.0]
    assert [g["name"] for g in groups] == ["encoder", "encoder_norms_biases", "rest", "rest_norms_biases"]
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))


@pytest.mark.parametrize("decay_norms_and_biases", [False, True])
def test_weight_decay_shrinks_the_weights_and_not_norms_or_biases(decay_norms_and_biases: bool) -> None:
    """One AdamW step with zero gradients does nothing but decay: every weight that multiplies an input
    shrinks by ``lr * weight_decay``; the BatchNorm scales and shifts and the biases keep their values unless
    ``decay_norms_and_biases`` (the behaviour before they were left out, as timm and nanoGPT leave them)."""
    from functools import partial

    from segkit.models import UNet
    from segkit.tasks import SegmentationTask

    net = UNet(num_classes=2, in_channels=1, base_channels=8, depth=2)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.5)  # BatchNorm's shifts start at zero, where decay would not show
    optimizer = partial(torch.optim.AdamW, lr=0.1, weight_decay=0.5)
    task = SegmentationTask(net, torch.nn.CrossEntropyLoss(), optimizer, num_classes=2,
                            decay_norms_and_biases=decay_norms_and_biases)  # fmt: skip
    built = task.configure_optimizers()["optimizer"]
    names = [g.get("name") for g in built.param_groups]  # one group logs as plain lr-AdamW
    assert names == ([None] if decay_norms_and_biases else ["weights", "weights_norms_biases"])
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    built.step()
    modules = list(net.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in modules)
    assert any(isinstance(m, torch.nn.Conv2d) and m.bias is not None for m in modules)  # the head's
    for name, p in net.named_parameters():
        shrunk = p.ndim > 1 or decay_norms_and_biases
        torch.testing.assert_close(p.detach(), before[name] * (0.95 if shrunk else 1.0), msg=name)


@pytest.mark.parametrize(
    ("encoder", "expected"),
    [
        # timm's list wrapper renames stages.2 -> stages_2; the names come through its spellings
        ("coatnet_nano_rw_224", [f"stages_{s}.blocks.{b}.attn.rel_pos.relative_position_bias_table"
                                 for s, n in ((2, 6), (3, 3)) for b in range(n)]),
        ("vit_tiny_patch16_224", ["model.cls_token", "model.pos_embed"]),  # the getter wrapper keeps the model
        ("resnet18", []),
    ],
)  # fmt: skip
def test_timm_no_weight_decay_tensors_are_left_undecayed(encoder: str, expected: list[str]) -> None:
    """timm lists tensors of two or more dimensions that are not weights (relative position bias tables, a
    ViT's position embedding and class token) in ``no_weight_decay()``; its ``features_only`` wrappers lose
    that method, and the encoder keeps the list so that AdamW leaves exactly those undecayed."""
    from functools import partial

    from segkit.models import UNet
    from segkit.tasks.base import param_groups

    net = UNet(num_classes=2, encoder=encoder)
    groups = param_groups(net, partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05))
    undecayed = {id(p) for g in groups if g.get("weight_decay") == 0.0 for p in g["params"]}
    beyond_norms_and_biases = [n for n, p in net.named_parameters() if id(p) in undecayed and p.ndim > 1]
    assert beyond_norms_and_biases == [f"encoder.model.{name}" for name in expected]
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))


def test_smp_timm_encoders_leave_the_same_tensors_undecayed() -> None:
    """smp's ``tu-`` encoders wrap the same timm ``features_only`` models and drop ``no_weight_decay()`` too:
    an smp U-Net on CoAtNet leaves its nine relative position bias tables undecayed, as segkit's does."""
    from functools import partial

    import segmentation_models_pytorch as smp

    from segkit.tasks.base import param_groups

    net = smp.Unet("tu-coatnet_nano_rw_224", encoder_weights=None, classes=2)
    groups = param_groups(net, partial(torch.optim.AdamW, lr=1e-3, weight_decay=0.05))
    undecayed = {id(p) for g in groups if g.get("weight_decay") == 0.0 for p in g["params"]}
    beyond_norms_and_biases = [n for n, p in net.named_parameters() if id(p) in undecayed and p.ndim > 1]
    assert beyond_norms_and_biases == [f"encoder.model.stages_{s}.blocks.{b}.attn.rel_pos.relative_position_bias_table"
                                       for s, n in ((2, 6), (3, 3)) for b in range(n)]  # fmt: skip


def test_classification_run_writes_accuracy_and_confusion_matrices(compose_cfg, tmp_path: Path, caplog) -> None:
    caplog.set_level(logging.INFO, logger="segkit.train")
    metrics = train(
        compose_cfg(
            "+experiment=shapes_classifier",
            "model.encoder=test_resnet",
            "trainer.max_epochs=1",
            "data.train_dataset.num_samples=16",
            "data.val_dataset.num_samples=9",
            "data.batch_size=4",
            "callbacks.rich_progress_bar=null",
        )
    )
    assert {"val/acc", "val/f1", "val/loss", "val/recall_disc"} <= set(metrics)
    assert "val/acc_top5" not in metrics  # only 3 classes
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["val/acc"] == pytest.approx(metrics["val/acc"])
    assert (tmp_path / "run" / "confusion" / "val_epoch_000.png").is_file()
    assert (tmp_path / "run" / "confusion" / "val_best.png").is_file()
    handed_over = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("Model for inference"))
    assert "segkit.predict" not in handed_over  # predict, eval and serve refuse a classifier


def test_a_class_the_val_folder_lacks_has_no_recall(compose_cfg, tmp_path: Path) -> None:
    """val/ may hold an empty folder for a class it lacks; that class's recall was reported as 0."""
    from conftest import write_class_folders

    write_class_folders(tmp_path / "cls" / "train", classes=("ants", "bees", "wasps"), n=3)
    write_class_folders(tmp_path / "cls" / "val", classes=("ants", "bees"), n=2)
    (tmp_path / "cls" / "val" / "wasps").mkdir()
    metrics = train(
        compose_cfg("+experiment=hymenoptera", f"data.train_dataset.root={tmp_path / 'cls' / 'train'}",
                    f"data.val_dataset.root={tmp_path / 'cls' / 'val'}", "data.num_classes=3", "data.batch_size=4",
                    "model.encoder=test_resnet", "trainer.max_epochs=1", "callbacks.rich_progress_bar=null")
    )  # fmt: skip
    assert {"val/recall_ants", "val/recall_bees"} <= set(metrics) and "val/recall_wasps" not in metrics


def test_aux_head_run_logs_its_loss_and_f1(compose_cfg) -> None:
    metrics = train(
        compose_cfg(
            "+model.aux_head={num_classes: 4, pool: avg, dropout: 0.0, loss_weight: 0.4}",
            "trainer.max_epochs=1",
            *TINY,
        )
    )
    assert {"val/aux_loss", "val/aux_f1", "val/miou"} <= set(metrics)


def test_mid_epoch_resume_continues_the_same_run(compose_cfg, tmp_path: Path, monkeypatch) -> None:
    """Stop after step 9 of 4 x 8 steps (mid-epoch); the resumed run ends at step 32 with one last.ckpt."""
    import pytorch_lightning as pl

    import segkit.train as train_module

    class StopAtStep(pl.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:
            if trainer.global_step == 10:
                raise RuntimeError("simulated crash")

    run = [
        "data.train_dataset.num_samples=32",
        "data.val_dataset.num_samples=4",
        "data.batch_size=4",
        "trainer.max_epochs=4",
        "callbacks.rich_progress_bar=null",
        "callbacks.last_checkpoint.every_n_train_steps=3",
    ]
    build = train_module.build_callbacks
    with monkeypatch.context() as patch:
        patch.setattr(train_module, "build_callbacks", lambda cfg: [*build(cfg), StopAtStep()])
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(compose_cfg(*run))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 9
    train(compose_cfg(*run, "ckpt_path=last"))
    assert torch.load(last, weights_only=True)["global_step"] == 32
    assert sorted(p.name for p in last.parent.glob("last*")) == ["last.ckpt"]


def test_fast_dev_run_writes_no_checkpoint_and_stale_temporaries_are_cleaned(compose_cfg, tmp_path: Path) -> None:
    stale = tmp_path / "run" / "checkpoints" / ".last.ckpt.x1y2.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by a killed writer")
    train(compose_cfg("+experiment=quickstart", "+debug=fast_dev_run", *TINY))
    assert list((tmp_path / "run" / "checkpoints").iterdir()) == []
    assert not (tmp_path / "run" / "model").exists()


def progress_lines(cfg, caplog) -> list[str]:
    """Train ``cfg`` and return the lines LogProgress logged."""
    with caplog.at_level(logging.INFO, logger="segkit.callbacks.progress"):
        train(cfg)
    return [r.getMessage() for r in caplog.records if r.name == "segkit.callbacks.progress"]


def test_progress_lines_reach_the_log_when_output_is_not_a_terminal(compose_cfg, caplog) -> None:
    from segkit.callbacks import terminal_progress_bar

    assert terminal_progress_bar() is None  # pytest captures stdout: no rich bar redrawn into a file
    cfg = compose_cfg("+experiment=quickstart", "trainer.max_epochs=2", "callbacks.log_progress.every_seconds=0",
                      "callbacks.rich_progress_bar._target_=segkit.callbacks.terminal_progress_bar", *TINY)  # fmt: skip
    lines = progress_lines(cfg, caplog)
    assert "epoch 0/1 | step 1/8 (12%)" in lines[0] and "it/s" in lines[0] and "ETA" in lines[0]
    assert any(line.startswith("validated | epoch 1/1 | step 8/8 (100%)") and "val/miou" in line for line in lines)


def test_a_run_stopped_by_the_clock_validates_its_final_weights(compose_cfg, caplog) -> None:
    """Step-based validation (the CamVid recipe's) still scores the weights the clock stopped at."""
    cfg = compose_cfg("+experiment=quickstart", "trainer.max_epochs=1000", "trainer.max_time=00:00:00:04",
                      "trainer.check_val_every_n_epoch=null", "trainer.val_check_interval=100000",
                      "callbacks.log_progress.every_seconds=0", *TINY)  # fmt: skip
    lines = progress_lines(cfg, caplog)
    validated = [line for line in lines if line.startswith("validated")]
    assert len(validated) == 1 and "val/miou" in validated[0]  # only the stop triggered a validation
    assert "ETA 0:00:00" in validated[0] and "-1 day" not in "".join(lines)  # past the clock: 0, not negative


def test_a_validation_that_ends_past_the_budget_ends_the_run(compose_cfg) -> None:
    """Lightning's Timer reads the clock after steps only: past the budget at a validation's end, the run
    trained one more step and validated again before its final validation."""
    import time

    from pytorch_lightning.callbacks import Timer

    class SlowFirstValidation(pl.Callback):
        def __init__(self) -> None:
            self.steps_at_validation: list[int] = []

        def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            if not trainer.sanity_checking and trainer.state.fn == "fit":
                self.steps_at_validation.append(trainer.global_step)
                if len(self.steps_at_validation) == 1:  # the first validation ends just past the budget
                    timer = next(c for c in trainer.callbacks if isinstance(c, Timer))
                    time.sleep(max(timer.time_remaining(), 0.0) + 0.2)

    slow = SlowFirstValidation()
    cfg = compose_cfg("+experiment=quickstart", "trainer.max_epochs=1000", "trainer.max_time=00:00:00:05", *TINY)
    train(cfg, extra_callbacks=[slow])
    assert slow.steps_at_validation == [4]  # no step and no validation after it
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 4


@pytest.mark.slow
def test_shapes_classifier_experiment_learns_as_the_readme_says(compose_cfg) -> None:
    metrics = train(compose_cfg("+experiment=shapes_classifier", "callbacks.rich_progress_bar=null"))
    assert metrics["val/acc"] >= 0.9  # chance is 0.33; the README states 0.98


def test_time_aware_schedule_gets_the_run_budget(compose_cfg) -> None:
    cfg = compose_cfg("scheduler=poly", "trainer.max_epochs=2", "trainer.max_time=00:00:10:00", *TINY)
    train(cfg)
    state = torch.load(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt", weights_only=True)
    scheduler = state["lr_schedulers"][0]
    assert scheduler["total_steps"] == state["global_step"] == 8  # steps of the whole run, from Lightning
    assert scheduler["max_seconds"] == 600.0  # from trainer.max_time
    assert scheduler["last_epoch"] == 8 and scheduler["elapsed_before"] > 0  # stepped every batch
    assert scheduler["_last_lr"][0] == pytest.approx(0.0, abs=1e-9)  # the step budget ran out first
