"""Optuna sweeps through Hydra: the search spaces compose with the direction taken from the metric, and a
sweep optimises the final weights' ``optimized_metric``, going on past a failed trial."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_module


@pytest.mark.parametrize("search", ["quickstart", "auto"])
@pytest.mark.parametrize(("metric", "direction"), [("val/miou", "maximize"), ("val/adapted_rand_error", "minimize")])
def test_search_spaces_compose_with_the_metrics_direction(search: str, metric: str, direction: str) -> None:
    with initialize_config_module(config_module="segkit.conf", version_base="1.3"):
        cfg = compose("train", [f"hparams_search={search}", f"optimized_metric={metric}"], return_hydra_config=True)
    assert cfg.hydra.sweeper.direction == direction
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert "task.optimizer.lr" in cfg.hydra.sweeper.params
    assert cfg.run_name == search  # the search brings its experiment


@pytest.mark.slow
def test_a_sweep_optimises_the_final_metric_and_survives_a_failed_trial(tmp_path: Path) -> None:
    """Three trials of the quickstart search with ``data.num_folds`` in {2, 100}: 2 trains, 100 (more folds
    than samples) fails with a clear error. The search's seeded sampler draws both: the sweep records the
    failures, goes on, and reports a trial that trained as the best, with its final-weights metric."""
    sweep = tmp_path / "sweep"
    command = [
        sys.executable, "-m", "segkit.train", "-m", "hparams_search=quickstart", "hydra.sweeper.n_trials=3",
        "data.num_folds=choice(2,100)",
        "trainer.max_time=null", "trainer.max_steps=2", "data.train_dataset.num_samples=8", "data.batch_size=4",
        "data.patch_size=[32,32]", "trainer.accelerator=cpu", "data.num_workers=0", "callbacks.rich_progress_bar=null",
        f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert results["best_params"]["data.num_folds"] == 2
    trials = [p for p in sweep.iterdir() if p.name.isdigit()]
    scores = [
        json.loads((p / "metrics.json").read_text())["val/miou"] for p in trials if (p / "metrics.json").is_file()
    ]
    assert len(trials) == 3 and 1 <= len(scores) <= 2  # the failed trials left no metrics
    assert results["best_value"] == pytest.approx(max(scores))  # the final weights' val/miou, maximised
    output = done.stdout + done.stderr
    assert output.count("Failed experiment") == 3 - len(scores)
    assert "data.num_folds=100 needs" in output  # the failure is reported, by name
    assert "setup plugin alembic" not in output  # Optuna's imports log nothing of alembic's (segkit.quiet)
