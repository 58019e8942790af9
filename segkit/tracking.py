"""Experiment tracking beyond Lightning's own logging: the composed config as parameters, the run's files as
artifacts, and sweeps as one parent run with a child per trial (MLflow).

Lightning's loggers record the metrics during training. What lightning-hydra-template users also expect is
the whole Hydra config next to them (so two runs can be compared key by key) and the outputs people look at:
pictures, ``metrics.json`` and the model folder. Only rank 0 logs (Lightning's loggers are rank-zero only).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

log = logging.getLogger(__name__)

MLFLOW_TARGET = "pytorch_lightning.loggers.MLFlowLogger"
PARENT_FILE = "mlflow_parent_run"  # in a multirun directory: the run id of the sweep's parent run
RUN_FILES = ("metrics.json", "plan.yaml", "fingerprint.json", "folds.json", "train.log", ".hydra/config.yaml")
RUN_FOLDERS = ("model", "predictions", "test")


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """``{"task.optimizer.lr": 0.001, ...}``: every leaf of the resolved config (lists as their text)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            out[prefix[:-1]] = node if isinstance(node, int | float | str | bool) or node is None else str(node)

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def sweep_parent(node: DictConfig, sweep_dir: Path) -> str:
    """The id of the parent run of the multirun in ``sweep_dir``, created by its first trial."""
    from mlflow.tracking import MlflowClient

    path = sweep_dir / PARENT_FILE
    if path.is_file():
        return path.read_text().strip()
    client = MlflowClient(tracking_uri=node.get("tracking_uri"))
    name = str(node.get("experiment_name") or "Default")
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        experiment_id = experiment.experiment_id
    else:
        experiment_id = client.create_experiment(name, artifact_location=node.get("artifact_location"))
    tags = {"segkit.sweep_dir": str(sweep_dir)}
    run = client.create_run(experiment_id, run_name=f"sweep {sweep_dir.name}", tags=tags)
    client.set_terminated(run.info.run_id)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(run.info.run_id)
    log.info("MLflow: the trials of %s are child runs of %s", sweep_dir, run.info.run_id)
    return run.info.run_id


def logger_node(node: DictConfig, sweep_dir: Path | None) -> DictConfig:
    """``node`` as configured, with a sweep trial's MLflow run tagged as a child of the sweep's parent run."""
    if node.get("_target_") != MLFLOW_TARGET or sweep_dir is None or not rank_zero_only.rank == 0:
        return node
    tags = dict(node.get("tags") or {})
    tags["mlflow.parentRunId"] = sweep_parent(node, sweep_dir)
    node = node.copy()
    node.tags = tags
    return node


@rank_zero_only
def log_config(loggers: list[Logger], cfg: DictConfig) -> None:
    """Every config leaf as a parameter of each MLflow run. CSV and TensorBoard runs keep the config in
    ``.hydra/config.yaml``; touching their writers here, before the trainer exists, would create them in the
    launching process, and under ``ddp_spawn`` its copy and the workers' then disagree on the CSV header."""
    flat = flat_config(cfg)
    for logger in loggers:
        if type(logger).__name__ == "MLFlowLogger":
            logger.log_hyperparams(flat)


@rank_zero_only
def log_run_files(loggers: list[Logger], output_dir: Path, metrics: dict, step: int) -> None:
    """The figures of ``metrics.json`` as ``summary/<name>`` metrics, and the run's files and pictures as
    artifacts of each MLflow run."""
    numbers = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    for logger in loggers:
        if type(logger).__name__ != "MLFlowLogger":
            continue
        logger.log_metrics({f"summary/{k}": v for k, v in numbers.items()}, step=step)
        client, run_id = logger.experiment, logger.run_id
        for name in RUN_FILES:
            if (output_dir / name).is_file():
                client.log_artifact(run_id, str(output_dir / name))
        for name in RUN_FOLDERS:
            if (output_dir / name).is_dir():
                client.log_artifacts(run_id, str(output_dir / name), artifact_path=name)
        log.info("MLflow: run %s in %s", run_id, logger._tracking_uri)
