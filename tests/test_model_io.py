"""Self-describing checkpoints and model folders: rebuild without Hydra, offline, without the weight file."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import timm
import torch

from segkit import load_model
from segkit.models import Classifier, UNet
from segkit.train import train

TINY = ["data.train_dataset.num_samples=8", "data.val_dataset.num_samples=4", "data.batch_size=4",
        "callbacks.rich_progress_bar=null"]  # fmt: skip


@pytest.mark.parametrize("net", [UNet(num_classes=3, encoder="test_convnext"), Classifier("test_resnet", 4)])
def test_save_pretrained_round_trips_outputs_exactly(tmp_path: Path, net: torch.nn.Module) -> None:
    net.eval()
    net.save_pretrained(tmp_path / "m", metadata={"class_names": ["a", "b", "c"]})
    again = type(net).from_pretrained(tmp_path / "m")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(again(x), net(x))
    assert json.loads((tmp_path / "m" / "config.json").read_text())["class_names"] == ["a", "b", "c"]


def test_a_run_trained_from_a_weight_file_loads_after_the_file_is_gone(compose_cfg, tmp_path: Path,
                                                                      monkeypatch) -> None:  # fmt: skip
    weights = tmp_path / "test_resnet.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), weights)
    train(compose_cfg("+experiment=quickstart", "model=unet", "model.encoder=test_resnet",
                      f"model.weights=file:{weights}", "trainer.max_epochs=1", *TINY))  # fmt: skip
    weights.unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("socket.socket.connect", lambda *a: (_ for _ in ()).throw(OSError("network off")))
    run = tmp_path / "run"
    x = torch.rand(1, 3, 64, 64)
    outputs = []
    for source in (run, run / "model", next((run / "checkpoints").glob("epoch_*.ckpt"))):
        loaded = load_model(source)
        assert not loaded.net.training
        meta = loaded.metadata
        assert meta["class_names"] == ["background", "disc", "square", "triangle"]
        assert meta["model"]["args"]["weights"] is None and meta["model"]["args"]["encoder"] == "test_resnet"
        assert meta["mean"] == [0.5, 0.5, 0.5] and meta["ignore_index"] == 255 and meta["padding"] == "same"
        assert meta["in_channels"] == 3 and len(meta["palette"]) == 4 and meta["color_mode"] == "rgb"
        with torch.no_grad():
            outputs.append(loaded.net(x))
    assert torch.equal(outputs[0], outputs[1]) and torch.equal(outputs[1], outputs[2])


def test_checkpoints_without_metadata_and_foreign_classes_are_refused(tmp_path: Path) -> None:
    old = tmp_path / "old.ckpt"
    torch.save({"state_dict": {"net.head.weight": torch.zeros(1)}, "epoch": 1}, old)
    with pytest.raises(ValueError, match="carries no segkit metadata"):
        load_model(old)
    folder = tmp_path / "evil"
    UNet(num_classes=2, depth=1, base_channels=4).save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["model"]["class"] = "os.system"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="not one of segkit's"):
        load_model(folder)
    with pytest.raises(FileNotFoundError, match="no checkpoint, run directory or model folder"):
        load_model(tmp_path / "missing.ckpt")
    (tmp_path / "train.log").write_text("a log, typed for ckpt=")  # torch said "Weights only load failed..."
    with pytest.raises(ValueError, match=r"train\.log is not a Lightning checkpoint; ckpt= takes a run directory"):
        load_model(tmp_path / "train.log")
    with pytest.raises(
        ValueError, match=r"model\.safetensors is not a Lightning checkpoint \(the model folder is .*evil\)"
    ):
        load_model(folder / "model.safetensors")
    assert os.listdir(tmp_path)


def test_a_multirun_directory_is_refused_with_its_runs_named(tmp_path: Path) -> None:
    """``segkit.export ckpt=<multirun dir>`` (and ``load_model``) said "has neither model/ nor
    checkpoints/last.ckpt", as if the sweep had failed; predict, eval and serve take it as an ensemble."""
    sweep = tmp_path / "mr"
    for run in ("0", "1"):
        (sweep / run / ".hydra").mkdir(parents=True)  # the layout ``python -m segkit.train -m`` writes
        UNet(num_classes=2, depth=1, base_channels=4).save_pretrained(sweep / run / "model")
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    with pytest.raises(ValueError, match=r"mr is a multirun directory \(2 runs: 0, 1\), and this takes one model: "
                                         r"give one run, e\.g\. .*mr/0\. segkit\.predict"):  # fmt: skip
        load_model(sweep)
    assert load_model(sweep / "0").net.num_classes == 2
