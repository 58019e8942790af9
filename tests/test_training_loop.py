"""The loop around the step: fixed-length epochs, picture cadence, torch.compile."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from segkit.data.samplers import EpochSampler
from segkit.train import train

TINY = ["data.val_dataset.num_samples=4", "data.batch_size=4", "callbacks.rich_progress_bar=null"]


def test_epoch_sampler_streams_are_per_seed_rank_and_epoch() -> None:
    data = list(range(10))
    draw = lambda rank, epoch=0, seed=3: (s := EpochSampler(data, 40, seed, 2, rank), s.set_epoch(epoch), list(s))[2]  # noqa: E731
    assert len(draw(0)) == 20 and set(draw(0)) <= set(data)
    assert draw(0) == draw(0)  # a run repeats
    assert draw(0) != draw(1)  # ranks draw their own samples
    assert draw(0, epoch=1) != draw(0)  # and every epoch differs
    assert draw(0, seed=4) != draw(0)


@pytest.mark.parametrize("num_samples", [6, 600])
def test_samples_per_epoch_fixes_the_steps_per_epoch_for_any_dataset_size(compose_cfg, tmp_path: Path,
                                                                         num_samples: int) -> None:  # fmt: skip
    train(compose_cfg("+experiment=quickstart", f"data.train_dataset.num_samples={num_samples}",
                      "data.samples_per_epoch=32", "trainer.max_epochs=2", *TINY))  # fmt: skip
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2 * 32 // 4


def test_pictures_follow_their_cadence(compose_cfg, tmp_path: Path) -> None:
    train(compose_cfg("+experiment=quickstart", "data.train_dataset.num_samples=8", "trainer.max_epochs=5",
                      "callbacks.prediction_grid.every_n_validations=2", "callbacks.metric_curves.every_n_epochs=3",
                      *TINY))  # fmt: skip
    grids = sorted(p.name for p in (tmp_path / "run" / "predictions").iterdir())
    assert grids == ["best.png", "epoch_000.png", "epoch_002.png", "epoch_004.png", "final.png"]
    assert (tmp_path / "run" / "curves.png").is_file()


def test_curves_are_drawn_every_n_epochs_and_at_the_end() -> None:
    from types import SimpleNamespace

    from segkit.callbacks import MetricCurves

    curves = MetricCurves(metrics=["val/loss"], dirpath="/tmp/segkit-curves-test", every_n_epochs=3)
    for epoch in range(7):
        curves.on_train_epoch_end(SimpleNamespace(current_epoch=epoch, callback_metrics={"val/loss": 1.0}), None)
    assert curves.drawn == 3  # epochs 0, 3, 6
    curves.on_train_end(SimpleNamespace(default_root_dir="/tmp"), None)
    assert curves.drawn == 4 and len(curves.history["val/loss"]) == 7


@pytest.mark.slow
def test_compiled_network_trains_a_few_steps_on_cpu(compose_cfg, tmp_path: Path) -> None:
    metrics = train(compose_cfg("+experiment=quickstart", "task.compile=true", "trainer.max_steps=3",
                                "data.train_dataset.num_samples=12", *TINY))  # fmt: skip
    assert 0.0 <= metrics["val/miou"] <= 1.0
    keys = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert not any("_orig_mod" in k or "_compiled" in k for k in keys)  # checkpoints keep plain names


@pytest.mark.parametrize(("device", "devices", "cpus", "workers", "pinned"), [
    ("cuda", 1, 16, 8, True), ("cuda", 4, 16, 3, True), ("cpu", 1, 2, 2, False), ("cpu", 2, 2, 1, False),
])  # fmt: skip
def test_auto_loader_settings_follow_the_device(monkeypatch, device: str, devices: int, cpus: int, workers: int,
                                                pinned: bool) -> None:  # fmt: skip
    from types import SimpleNamespace

    from segkit.data import SegmentationDataModule, SyntheticShapes

    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    dm = SegmentationDataModule(lambda transform: SyntheticShapes(8, transform=transform), 4, num_workers="auto",
                                pin_memory="auto", batch_size=2)  # fmt: skip
    dm.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device(device)), num_devices=devices,
                                 global_rank=0)  # fmt: skip
    dm.setup("fit")
    assert dm.loader_workers() == workers
    assert dm.val_dataloader().pin_memory == pinned


def test_gpu_presets_turn_on_bf16_and_channels_last(compose_cfg) -> None:
    for preset in ("gpu", "ddp", "multinode"):
        cfg = compose_cfg(f"trainer={preset}")
        assert cfg.trainer.precision == "bf16-mixed" and cfg.task.channels_last, preset
