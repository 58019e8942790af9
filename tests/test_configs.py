"""Every option of every config group composes and instantiates; bad keys and names fail loudly."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from torch import nn

from segkit.data.class_weights import median_frequency_weights
from segkit.train import build_callbacks, build_loggers, compose_config, resolve_class_weights
from tests.conftest import SHARED_DATA, require_shared

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = ["data", "aug", "model", "task", "loss", "scheduler", "trainer", "precision", "callbacks", "logger", "debug"]
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def instantiate_all(cfg) -> None:
    """Build every object train() builds, without fitting."""
    root = str(cfg.data.train_dataset.get("root", ""))
    if root.startswith(str(SHARED_DATA)):
        require_shared(root)
    aug = cfg.get("aug") or {}
    dm = instantiate(cfg.data, train_transform=instantiate(aug.get("train")), val_transform=instantiate(aug.get("val")))
    dm.setup("fit")
    resolve_class_weights(cfg, dm)
    net = instantiate(cfg.model)
    assert isinstance(net, nn.Module)
    task = instantiate(cfg.task, net=net, _convert_="all")
    assert isinstance(task, pl.LightningModule)
    task.training_budget = lambda: {"total_steps": 100, "max_seconds": 60.0}  # no trainer here: Lightning's figures
    task.configure_optimizers()
    trainer = instantiate(cfg.trainer, callbacks=build_callbacks(cfg), logger=build_loggers(cfg) or False)
    assert isinstance(trainer, pl.Trainer)


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}/{o}" for g, o in OPTIONS])
def test_every_config_option_composes_and_instantiates(compose_cfg, synthetic_dir, group: str, option: str) -> None:
    overrides = [f"+{group}={option}" if group == "debug" else f"{group}={option}"]  # debug composes last
    if (group == "data" and option in ("hymenoptera", "synthetic_classes")) or (group, option) == ("loss", "none"):
        if group == "loss":
            overrides.append("data=synthetic_classes")
        overrides += ["task=classification", "loss=none", "model=classifier", "callbacks.prediction_grid=null"]
    if group == "trainer" and option in ("ddp", "multinode"):
        overrides += ["trainer.devices=2"]  # no GPUs here: build the same strategy on 2 CPU devices
    if group == "data" and option == "folder":
        overrides += [f"paths.data_dir={synthetic_dir}", "data.num_classes=3"]
    if group == "model" and option == "unet_paper":
        overrides += ["model.in_channels=3"]
    if group == "model" and option.startswith("unet_") and option not in ("unet_small", "unet_paper"):
        overrides += ["model.weights=null"]  # no hub downloads in tests
    instantiate_all(compose_cfg(*overrides))


@pytest.mark.parametrize("encoder", sorted(p.stem for p in (CONF / "model" / "encoder").glob("*.yaml")))
def test_every_encoder_option_composes(compose_cfg, encoder: str) -> None:
    """model/encoder=NAME sets the encoder (the networks themselves are built in tests/models)."""
    assert compose_cfg(f"model/encoder={encoder}").model.encoder == encoder


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_instantiates(compose_cfg, tmp_path: Path, name: str) -> None:
    overrides = []
    if name == "isbi2012_from_hymenoptera":  # needs a classifier checkpoint: make one
        from segkit.models import Classifier

        state = {f"net.{k}": v for k, v in Classifier("resnet18", num_classes=2).state_dict().items()}
        torch.save({"state_dict": state}, tmp_path / "cls.ckpt")
        overrides.append(f"model.weights=file:{tmp_path / 'cls.ckpt'}")
    if name == "auto":  # plans while composing: needs a folder dataset
        require_shared(SHARED_DATA / "isbi2012_em")
        overrides += ["data=isbi2012", "planner.widths=[4]", "trainer.accelerator=cpu"]
    cfg = compose_cfg(f"+experiment={name}", *overrides)
    assert cfg.run_name == name
    instantiate_all(cfg)


def test_the_handoff_experiment_without_weights_is_refused(compose_cfg) -> None:
    """Its ``model.weights: ???`` never demanded anything (OmegaConf keeps the ``null`` it merged onto), so
    the handoff trained ISBI from scratch; ``strict_weights`` without weights now stops the run first."""
    from segkit.train import train

    cfg = compose_cfg("+experiment=isbi2012_from_hymenoptera")
    assert cfg.model.weights is None and cfg.model.strict_weights
    with pytest.raises(ValueError, match=r"model.strict_weights=true needs model.weights \(file:<path>"):
        train(cfg)


@pytest.mark.parametrize(("cuda", "why"), [(None, "is a CPU-only build"), ("13.0", "sees no CUDA device")])
def test_the_gpu_preset_without_a_gpu_says_why(compose_cfg, monkeypatch, cuda: str | None, why: str) -> None:
    """Lightning answered ``trainer=gpu`` on a machine without one with "No supported gpu backend found!"."""
    from segkit.train import train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", cuda)
    cfg = compose_cfg("+experiment=quickstart", "trainer=gpu")
    cfg.trainer.accelerator = "gpu"  # compose_cfg sets the CPU for tests
    with pytest.raises(ValueError, match=rf"trainer.accelerator=gpu \(trainer=gpu\), but torch .* {why}.*trainer=cpu"):
        train(cfg)


@pytest.mark.parametrize("length", ["trainer.max_epochs=0", "trainer.max_steps=0"])
def test_a_trainer_that_stops_before_its_first_step_is_warned_about(compose_cfg, caplog, length: str) -> None:
    """``trainer.max_epochs=0`` trained nothing, wrote ``model/`` from the initial weights and exited 0 without a
    word. It stays possible (an untrained baseline, as test_a_few_dozen_steps_learn_well_above_chance scores),
    and says so."""
    from segkit.train import check_training_length

    with caplog.at_level(logging.WARNING, logger="segkit.train"):
        assert check_training_length(compose_cfg("+experiment=quickstart", length).trainer)
    assert f"{length} trains nothing: the run scores and hands over its initial weights" in caplog.text
    assert not check_training_length(compose_cfg("+experiment=quickstart").trainer)


def test_a_network_taking_other_channels_than_the_images_is_refused(compose_cfg, tmp_path: Path) -> None:
    """``model=unet_paper`` (one channel) on RGB images failed inside torch's first conv."""
    from conftest import write_pairs

    from segkit.train import train

    write_pairs(tmp_path / "train", n=4, size=(64, 64), values=(0, 1))
    cfg = compose_cfg("data=folder", f"paths.data_dir={tmp_path}", "data.val_dataset=null", "model.in_channels=1",
                      "data.patch_size=[64,64]", "+debug=fast_dev_run")  # fmt: skip
    with pytest.raises(ValueError, match=r"takes 1-channel images \(model.in_channels=1\) but the training images "
                       r"in .*train have 3: set model.in_channels=3, or read them as grey"):  # fmt: skip
        train(cfg)


def test_unknown_key_and_unknown_experiment_fail_at_compose_time(compose_cfg) -> None:
    with pytest.raises(ConfigCompositionException):
        compose_cfg("+experiment=no_such_experiment")
    with pytest.raises(ConfigCompositionException):
        compose_cfg("model.no_such_argument=3")


def test_misspelled_constructor_argument_fails_at_instantiate(compose_cfg) -> None:
    cfg = compose_cfg("+model.base_channelz=8")
    with pytest.raises(Exception, match="base_channelz"):
        instantiate(cfg.model)


def test_last_checkpoint_interval_can_be_given_in_minutes(compose_cfg) -> None:
    from datetime import timedelta

    cfg = compose_cfg(
        "callbacks.last_checkpoint.every_n_train_steps=null",
        "+callbacks.last_checkpoint.train_time_interval={_target_: datetime.timedelta, minutes: 10}",
    )
    last = instantiate(cfg.callbacks.last_checkpoint)
    assert last._train_time_interval == timedelta(minutes=10) and last.save_last


def test_debug_preset_wins_over_the_experiment(compose_cfg) -> None:
    cfg = compose_cfg("+experiment=quickstart", "+debug=overfit")
    assert cfg.trainer.max_epochs == 100 and cfg.trainer.overfit_batches == 1
    assert cfg.task.scheduler._target_ == "segkit.schedulers.CosineLR"  # over the run's budget, whatever it is
    with pytest.raises(ConfigCompositionException, match=r"\+debug=overfit"):
        compose_cfg("+experiment=quickstart", "debug=overfit")  # Hydra's message says to append it with +


def test_common_trainer_arguments_are_overridable_without_plus(compose_cfg) -> None:
    cfg = compose_cfg("trainer.max_steps=7", "trainer.limit_train_batches=3", "trainer.limit_val_batches=0.5",
                      "trainer.accumulate_grad_batches=2", "trainer.limit_test_batches=1")  # fmt: skip
    trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
    assert (trainer.max_steps, trainer.limit_train_batches, trainer.limit_val_batches) == (7, 3, 0.5)
    assert trainer.accumulate_grad_batches == 2


@pytest.mark.parametrize(("name", "power"), [("median_frequency", 1.0), ("sqrt_median_frequency", 0.5)])
def test_class_weights_by_name_come_from_the_training_masks(compose_cfg, synthetic_dir, name, power) -> None:
    cfg = compose_cfg("data=folder", f"paths.data_dir={synthetic_dir}", "data.num_classes=3", "loss=dice_ce",
                      f"task.loss.class_weights={name}")  # fmt: skip
    dm = instantiate(cfg.data)
    dm.setup("fit")
    resolve_class_weights(cfg, dm)
    expected = median_frequency_weights(dm.train_set, 3, power)
    assert len(set(expected)) > 1 and list(cfg.task.loss.class_weights) == pytest.approx(expected)
    loss = instantiate(cfg.task.loss, _convert_="all")
    assert loss.ce.weight.tolist() == pytest.approx(expected)


def test_misspelled_class_weights_name_names_the_choices(compose_cfg) -> None:
    cfg = compose_cfg("loss=ce", "task.loss.class_weights=median_freq")
    with pytest.raises(Exception, match="median_freq.*median_frequency / sqrt_median_frequency"):
        instantiate(cfg.task.loss)


def test_segmentation_without_a_loss_fails_at_start_up(compose_cfg) -> None:
    cfg = compose_cfg("loss=none")
    with pytest.raises(Exception, match="needs a loss.*loss=dice_ce"):  # wrapped by Hydra
        instantiate(cfg.task, net=instantiate(cfg.model), _convert_="all")


def test_compose_config_from_python_matches_the_command_line(tmp_path: Path, monkeypatch) -> None:
    cfg = compose_config(["+experiment=quickstart", "trainer.max_epochs=3"], output_dir=tmp_path / "run")
    assert cfg.trainer.max_epochs == 3 and cfg.run_name == "quickstart"
    assert cfg.paths.output_dir == str(tmp_path / "run")
    monkeypatch.setenv("SEGKIT_RUN_ID", "job42")
    default = compose_config(["+experiment=quickstart", f"paths.log_dir={tmp_path}"])
    assert Path(default.paths.output_dir) == tmp_path / "quickstart" / "job42"  # as hydra/default.yaml names runs
    with pytest.raises(ConfigCompositionException):
        compose_config(["+experiment=quickstart", "trainer.max_epoch=3"])
