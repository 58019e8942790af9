"""The command line as a new user meets it: --help, and a run piped to a file (CI, SLURM, nohup)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    return subprocess.run([sys.executable, "-m", "segkit.train", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)  # fmt: skip


def test_help_starts_with_usage_and_lists_the_experiments(tmp_path: Path) -> None:
    done = run("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("Usage: python -m segkit.train +experiment=NAME")
    experiments = (
        "camvid, hymenoptera, isbi2012, isbi2012_from_hymenoptera, isbi2012_paper, quickstart, shapes_classifier"
    )
    assert f"experiment: {experiments}" in done.stdout


@pytest.mark.parametrize("verb", ["predict", "eval", "export"])
def test_every_command_help_starts_with_a_usage_line(verb: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", f"segkit.{verb}", "--help"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"Usage: python -m segkit.{verb} ckpt=")


def test_a_run_piped_to_a_file_shows_progress_and_no_dependency_noise(tmp_path: Path) -> None:
    done = run("+experiment=quickstart", "trainer.max_epochs=2", "data.train_dataset.num_samples=32",
               "data.val_dataset.num_samples=4", "callbacks.log_progress.every_seconds=0",
               f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    log = (tmp_path / "run" / "train.log").read_text()
    for text in (output, log):
        assert "validated | epoch 2/2 | step 4/4 (100%)" in text  # progress, with no terminal attached
    assert "Model: UNet (encoder unet): 0.48 M parameters, 0.48 M trainable" in log
    for noise in ("💡 Tip", "LeafSpec", "Total FLOPs", "not supported by the model summary"):
        assert noise not in output, noise
