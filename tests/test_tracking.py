"""MLflow tracking to a temporary local store: the config as parameters, metrics, the run's files as
artifacts, and a sweep as a parent run with one child per trial."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from segkit.train import train

mlflow = pytest.importorskip("mlflow", reason="MLflow tracking needs the track extra (pip install -e '.[track]')")

TINY = ["trainer.max_epochs=1", "data.train_dataset.num_samples=8", "data.val_dataset.num_samples=2",
        "data.batch_size=4", "data.patch_size=[32,32]", "callbacks.rich_progress_bar=null"]  # fmt: skip


def test_a_run_logs_config_metrics_and_files_to_mlflow(compose_cfg, tmp_path: Path, capfd) -> None:
    store = tmp_path / "mlruns"
    cfg = compose_cfg("+experiment=quickstart", *TINY, "logger=mlflow", f"paths.log_dir={store}")
    metrics = train(cfg)
    assert "MLflow database tables" not in capfd.readouterr().err  # mlflow's own INFO lines, in its own format
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    assert run.data.params["task.optimizer.lr"] == "0.002"  # the composed config, key by key
    assert run.data.params["data.train_dataset.num_samples"] == "8"
    assert run.data.metrics["summary/val/miou"] == pytest.approx(metrics["val/miou"])
    # what Lightning logged during training; the rate of each named parameter group (segkit.tasks.base.param_groups)
    assert {"val/loss", "lr-AdamW/weights", "lr-AdamW/weights_norms_biases"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"metrics.json", "model", "config.yaml"} <= artifacts  # train.log too, from the command line
    model = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert "model/model.safetensors" in model


@pytest.mark.slow  # ~20 s on 2 CPU cores
def test_a_sweep_is_one_parent_run_with_a_child_per_trial(tmp_path: Path) -> None:
    store = tmp_path / "mlruns"
    command = [sys.executable, "-m", "segkit.train", "-m", "+experiment=quickstart", "seed=1,2", *TINY,
               "trainer.accelerator=cpu", "data.num_workers=0", "logger=mlflow",
               f"paths.log_dir={store}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]  # fmt: skip
    subprocess.run(command, check=True, cwd=tmp_path)
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 2
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    assert sorted(c.data.params["seed"] for c in children) == ["1", "2"]


@pytest.mark.slow
def test_under_ddp_only_rank_zero_logs_one_mlflow_run(tmp_path: Path) -> None:
    store = tmp_path / "mlruns"
    command = [sys.executable, "-m", "segkit.train", "+experiment=quickstart", "trainer=ddp_sim", *TINY,
               "logger=mlflow", f"paths.log_dir={store}"]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    client = mlflow.tracking.MlflowClient(tracking_uri=f"sqlite:///{store}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("quickstart").experiment_id])
    assert run.data.params["trainer.strategy"] == "ddp" and run.data.params["trainer.devices"] == "2"
    assert "summary/val/miou" in run.data.metrics
    assert "metrics.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
