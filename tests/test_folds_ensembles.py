"""k-fold splits (deterministic, stratified, disjoint, complete), fold runs and their summary, and ensembles
that average their members' probabilities."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_pairs
from omegaconf import OmegaConf

from segkit.crossval import summarize
from segkit.data import FolderDataset, SegmentationDataModule
from segkit.data.folds import fold_indices, sample_strata, stratified_folds
from segkit.inference import Ensemble, Predictor, split_samples
from segkit.inference.model_files import LoadedModel, inference_metadata
from segkit.models import UNet
from segkit.train import train


def rare_class_strata(n: int = 40, rare: int = 5) -> list[tuple[int, ...]]:
    """Every image has class 0; class 1 in half of them; class 2 (rare) only in the first ``rare`` images."""
    return [tuple([0] + ([1] if i % 2 else []) + ([2] if i < rare else [])) for i in range(n)]


def test_folds_are_disjoint_complete_balanced_and_deterministic() -> None:
    strata = rare_class_strata(43)
    folds = stratified_folds(strata, 5, seed=3)
    assert sorted(i for fold in folds for i in fold) == list(range(43))  # every image exactly once
    assert sorted(len(f) for f in folds) == [8, 8, 9, 9, 9]
    assert stratified_folds(strata, 5, seed=3) == folds
    assert stratified_folds(strata, 5, seed=4) != folds  # the seed changes the split


def test_a_class_in_k_images_reaches_every_fold() -> None:
    """A class present in exactly K images has one in each fold's validation, whatever the seed."""
    strata = rare_class_strata(40, rare=5)
    for seed in range(10):
        folds = stratified_folds(strata, 5, seed)
        assert [sum(2 in strata[i] for i in fold) for fold in folds] == [1, 1, 1, 1, 1]
        halves = [sum(1 in strata[i] for i in fold) for fold in folds]
        assert max(halves) - min(halves) <= 1  # the common classes spread too


def test_fold_indices_validates_one_fold_and_trains_on_the_rest() -> None:
    strata = rare_class_strata(12)
    folds = stratified_folds(strata, 3)
    train_idx, val_idx = fold_indices(strata, 3, 1)
    assert val_idx == folds[1]
    assert train_idx == sorted(folds[0] + folds[2])
    with pytest.raises(ValueError, match="data.fold=3 is not one of the 3 folds"):
        fold_indices(strata, 3, 3)
    with pytest.raises(ValueError, match="num_folds=13 needs"):
        stratified_folds(strata, 13)


def test_the_datamodule_validates_on_the_fold_and_split_samples_agree(tmp_path: Path) -> None:
    write_pairs(tmp_path / "train", n=9, values=(0, 1))
    factory = OmegaConf.create({"_target_": "segkit.data.FolderDataset", "_partial_": True,
                                "root": str(tmp_path / "train"), "num_classes": 3})  # fmt: skip
    from hydra.utils import instantiate

    dm = SegmentationDataModule(instantiate(factory), 3, num_folds=3, fold=2, mean=[0.5] * 3, std=[0.5] * 3)
    dm.setup("fit")
    assert len(dm.train_set) == 6 and len(dm.val_set) == 3
    assert set(dm.split["train"]).isdisjoint(dm.split["val"])
    assert sorted(dm.split["train"] + dm.split["val"]) == sorted(str(i) for i in range(9))
    assert [s["name"] for s in dm.val_set] == dm.split["val"]
    data_cfg = OmegaConf.create({"train_dataset": factory, "num_folds": 3, "fold": 2, "split_seed": 0})
    assert [s["name"] for s in split_samples(data_cfg, "val")] == dm.split["val"]  # segkit.eval's view


def test_without_a_val_dataset_split_samples_holds_out_what_the_datamodule_held_out(tmp_path: Path) -> None:
    """A run trained with ``data.val_dataset=null`` validated on ``val_fraction`` of its training folder;
    ``segkit.eval`` on that run must score the same images (it once refused: "no val_dataset")."""
    write_pairs(tmp_path / "train", n=10, values=(0, 1))
    factory = OmegaConf.create({"_target_": "segkit.data.FolderDataset", "_partial_": True,
                                "root": str(tmp_path / "train"), "num_classes": 3})  # fmt: skip
    from hydra.utils import instantiate

    dm = SegmentationDataModule(instantiate(factory), 3, val_fraction=0.3, split_seed=5, mean=[0.5] * 3, std=[0.5] * 3)
    dm.setup("fit")
    data_cfg = OmegaConf.create({"train_dataset": factory, "val_dataset": None, "val_fraction": 0.3, "split_seed": 5})
    val = [s["name"] for s in split_samples(data_cfg, "val")]
    assert val == [s["name"] for s in dm.val_set] and len(val) == 3
    assert [s["name"] for s in split_samples(data_cfg, "train")] == [s["name"] for s in dm.train_set]
    with pytest.raises(ValueError, match="split=tset: give split=val, test or train"):
        split_samples(data_cfg, "tset")


def test_folder_datasets_record_the_classes_each_image_contains(tmp_path: Path) -> None:
    write_pairs(tmp_path / "a", n=2, values=(0, 2))
    dataset = FolderDataset(tmp_path / "a", num_classes=3)
    assert sample_strata(dataset) == [(0, 2), (0, 2)]


def tiny_model(tmp_path: Path, seed: int, classes: list[str] = ("a", "b", "c")) -> LoadedModel:
    torch.manual_seed(seed)
    net = UNet(num_classes=len(classes), base_channels=4, depth=2).eval()
    meta = inference_metadata(net, "segmentation", list(classes), None)
    meta.update(mean=[0.5] * 3, std=[0.25] * 3, patch_size=[64, 64], color_mode="rgb", intensity=None,
                ignore_index=255)  # fmt: skip
    return LoadedModel(net, meta, tmp_path / f"model_{seed}")


def test_an_ensemble_predicts_the_mean_of_its_members_probabilities(tmp_path: Path) -> None:
    members = [tiny_model(tmp_path, seed) for seed in (1, 2, 3)]
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    alone = [Predictor(m, precision="fp32", device="cpu").probabilities(image) for m in members]
    ensemble = Predictor(members, precision="fp32", device="cpu")
    assert isinstance(ensemble.model.net, Ensemble)
    np.testing.assert_allclose(ensemble.probabilities(image), np.mean(alone, axis=0), atol=1e-5)
    assert not np.allclose(alone[0], alone[1], atol=1e-3)  # the members really differ
    assert "ensemble of 3 models" in ensemble.describe()


def test_an_ensemble_refuses_members_with_other_classes_or_preprocessing(tmp_path: Path) -> None:
    a, b = tiny_model(tmp_path, 1), tiny_model(tmp_path, 2, classes=["a", "b", "x"])
    with pytest.raises(ValueError, match="their class_names differ"):
        Predictor([a, b], device="cpu")
    c = tiny_model(tmp_path, 3)
    c.metadata["mean"] = [0.4] * 3
    with pytest.raises(ValueError, match="their mean differ"):
        Predictor([a, c], device="cpu")
    c = tiny_model(tmp_path, 3)  # tiny models say nothing of their normalisation, as files from before it
    c.metadata["normalization"] = "dataset"  # which is what they did
    Predictor([a, c], device="cpu")
    c.metadata["normalization"] = "image"
    with pytest.raises(ValueError, match="their normalization differ"):
        Predictor([a, c], device="cpu")


def test_per_image_members_ensemble_whatever_dataset_statistics_they_recorded(tmp_path: Path) -> None:
    """Members that z-score each image by its own statistics never apply their recorded mean/std."""
    a, b = tiny_model(tmp_path, 1), tiny_model(tmp_path, 2)
    a.metadata["normalization"] = b.metadata["normalization"] = "image"
    b.metadata.update(mean=[0.4] * 3, std=[0.3] * 3)
    Predictor([a, b], device="cpu")
    b.metadata["padding"] = "valid"  # what they do apply is still compared
    with pytest.raises(ValueError, match="their padding differ"):
        Predictor([a, b], device="cpu")


def write_fold_run(root: Path, fold: int, folds: list[list[str]], miou: float) -> None:
    run = root / str(fold)
    run.mkdir(parents=True)
    val = folds[fold]
    train = [n for i, f in enumerate(folds) if i != fold for n in f]
    record = {"num_folds": len(folds), "fold": fold, "split_seed": 0, "train": train, "val": val}
    (run / "folds.json").write_text(json.dumps(record))
    (run / "metrics.json").write_text(json.dumps({"val/miou": miou, "val/loss": 1.0, "weights": {"val/": "final"}}))


def test_a_fold_ensemble_without_an_unseen_val_dataset_is_refused(tmp_path: Path) -> None:
    """Fold models trained on every training image; with ``val_dataset: null`` the only "val" left is a
    hold-out of that same folder, so scoring it would report the members' training images."""
    from segkit.eval import data_config

    (tmp_path / ".hydra").mkdir()
    data = {"train_dataset": {"root": "x"}, "val_dataset": None, "num_folds": 2, "fold": 0}
    OmegaConf.save({"data": data}, tmp_path / ".hydra" / "config.yaml")
    ensemble = Predictor([tiny_model(tmp_path, seed) for seed in (1, 2)], precision="fp32", device="cpu")
    with pytest.raises(ValueError, match="no val_dataset to score them on unseen images: give split=test"):
        data_config(OmegaConf.create({"ckpt": str(tmp_path), "split": "val"}), ensemble)
    assert data_config(OmegaConf.create({"ckpt": str(tmp_path), "split": "test"}), ensemble).num_folds is None


def test_crossval_reports_each_fold_and_the_mean_and_spread(tmp_path: Path) -> None:
    folds = [["0", "1"], ["2", "3"], ["4", "5"]]
    for fold, miou in enumerate([0.5, 0.6, 0.7]):
        write_fold_run(tmp_path, fold, folds, miou)
    summary = summarize(tmp_path)
    assert summary["folds"][1]["val/miou"] == 0.6
    assert summary["mean"]["val/miou"] == pytest.approx(0.6)
    assert summary["std"]["val/miou"] == pytest.approx(0.1)  # sample standard deviation of 0.5, 0.6, 0.7
    assert json.loads((tmp_path / "crossval.json").read_text())["mean"]["val/miou"] == pytest.approx(0.6)


def test_crossval_refuses_overlapping_folds(tmp_path: Path) -> None:
    write_fold_run(tmp_path, 0, [["0", "1"], ["1", "2"]], 0.5)
    write_fold_run(tmp_path, 1, [["0", "1"], ["1", "2"]], 0.5)
    with pytest.raises(ValueError, match="validates in folds 0 and 1"):
        summarize(tmp_path)


def test_a_fold_run_saves_its_split(compose_cfg, tmp_path: Path) -> None:
    write_pairs(tmp_path / "data" / "train", n=8, values=(0, 1, 2))
    cfg = compose_cfg("data=folder", f"paths.data_dir={tmp_path / 'data'}", "data.val_dataset=null",
                      "data.num_classes=3", "data.num_folds=4", "data.fold=3", "+debug=fast_dev_run",
                      "model.base_channels=4", "model.depth=2", "data.patch_size=[32,32]")  # fmt: skip
    train(cfg)
    record = json.loads((Path(cfg.paths.output_dir) / "folds.json").read_text())
    assert record["fold"] == 3 and record["num_folds"] == 4
    assert len(record["val"]) == 2 and len(record["train"]) == 6


@pytest.mark.slow
def test_folds_multirun_summary_and_ensemble_end_to_end(tmp_path: Path) -> None:
    """``-m data.num_folds=2 data.fold=0,1``, then ``segkit.crossval`` and ``segkit.eval`` on the multirun dir."""
    write_pairs(tmp_path / "data" / "train", n=8, size=(32, 32), values=(0, 1, 2))
    write_pairs(tmp_path / "data" / "val", n=2, size=(32, 32), values=(0, 1, 2))  # what the ensemble is scored on
    env_dir = tmp_path / "sweep"
    common = [f"paths.data_dir={tmp_path / 'data'}", "data.num_classes=3",
              "model.base_channels=4", "model.depth=2", "data.patch_size=[32,32]", "trainer.max_steps=2",
              "trainer.accelerator=cpu", "data.num_workers=0", "callbacks.rich_progress_bar=null"]  # fmt: skip
    command = [sys.executable, "-m", "segkit.train", "-m", "data=folder", "data.num_folds=2", "data.fold=0,1",
               *common, f"hydra.sweep.dir={env_dir}"]  # fmt: skip
    subprocess.run(command, check=True, cwd=tmp_path)
    assert sorted(p.name for p in env_dir.iterdir() if (p / "model").is_dir()) == ["0", "1"]
    subprocess.run([sys.executable, "-m", "segkit.crossval", f"dir={env_dir}"], check=True, cwd=tmp_path)
    summary = json.loads((env_dir / "crossval.json").read_text())
    assert summary["num_folds"] == 2 and sorted(summary["folds"]) == ["0", "1"]
    out = tmp_path / "eval"
    subprocess.run([sys.executable, "-m", "segkit.eval", f"ckpt={env_dir}", f"output={out}", "split=val",
                    "device=cpu"], check=True, cwd=tmp_path)  # fmt: skip
    log = (out / "eval.log").read_text()
    assert "ensemble of 2 models" in log and "scoring the data config's own val split" in log
    members = f"ckpt=[{env_dir / '0'},{env_dir / '1'}]"  # a list of models on the command line
    subprocess.run([sys.executable, "-m", "segkit.predict", members, f"input={tmp_path / 'data' / 'val' / 'images'}",
                    f"output={tmp_path / 'pred'}", "device=cpu"], check=True, cwd=tmp_path)  # fmt: skip
    assert sorted(p.name for p in (tmp_path / "pred").glob("?.png")) == ["0.png", "1.png"]
