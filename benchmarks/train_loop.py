"""Training-loop overhead: the bare step against ``segkit.train`` end to end, same config, same machine.

    NO_ALBUMENTATIONS_UPDATE=1 python benchmarks/train_loop.py [--seconds 120] [hydra overrides ...]
    NO_ALBUMENTATIONS_UPDATE=1 python benchmarks/train_loop.py +experiment=quickstart

Default overrides: ``+experiment=isbi2012 paths.data_dir=$SEGKIT_DATA_DIR`` (or ../shared/data). Prints
(1) one loader worker's throughput for the config's training pipeline (reading + augmentation), (2) the bare
step (forward, loss, backward, optimizer) of the configured network, batch, precision, memory format and loss
on one fixed batch, and (3) ``train(cfg)`` run for ``--seconds``: training images per second over the training
window (validation, checkpoints and pictures inside it included; start-up and the final validation not),
their ratio, and the peak resident memory. Run it alone: two torch processes on a small machine slow each
other down many times over.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from segkit.tasks.base import build_optimization
from segkit.train import compose_config, train


class TrainingWindow(pl.Callback):
    """Wall time from the first training batch (after ``skip`` steps of warm-up) to the end of fitting, the
    steps taken in it, and how much of it went to in-training validation."""

    def __init__(self, skip: int = 0) -> None:
        self.start = self.end = self.validating = self._val_start = 0.0
        self.first_step = self.steps = 0
        self.skip = skip

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.start and not trainer.sanity_checking:
            self.validating += time.perf_counter() - self._val_start

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if not self.start and trainer.global_step >= self.skip:
            self.start, self.first_step = time.perf_counter(), trainer.global_step

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.end, self.steps = time.perf_counter(), trainer.global_step - self.first_step


def loader_throughput(cfg: DictConfig, seconds: float = 5.0) -> float:
    datamodule = instantiate(cfg.data, train_transform=instantiate(cfg.aug.train), val_transform=None, seed=0)
    datamodule.setup("fit")
    dataset, n, start = datamodule.train_set, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        dataset[n % len(dataset)]
        n += 1
    return n / (time.perf_counter() - start)


def bare_step(cfg: DictConfig, seconds: float = 20.0) -> float:
    datamodule = instantiate(cfg.data, train_transform=instantiate(cfg.aug.train), val_transform=None, seed=0)
    datamodule.setup("fit")
    batch = next(iter(datamodule.train_dataloader()))
    task = instantiate(cfg.task, net=instantiate(cfg.model), class_names=datamodule.class_names, _convert_="all")
    # the configured optimizer without its scheduler: a budgeted schedule needs the trainer's run length
    optimizer = build_optimization(task.net, task.optimizer_factory, scheduler=None)["optimizer"]
    bf16 = "bf16" in str(cfg.trainer.precision)
    image, mask = batch["image"], batch["mask"]
    task.train()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = task.loss(task(image), mask)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(3):  # warm-up
        step()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    return n * image.shape[0] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    data_dir = os.environ.get("SEGKIT_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    overrides = args.overrides or ["+experiment=isbi2012", f"paths.data_dir={data_dir}"]
    minutes, seconds = divmod(args.seconds, 60)
    run_dir = Path("outputs") / "benchmark_train_loop" / time.strftime("%Y-%m-%d_%H-%M-%S")
    cfg = compose_config([*overrides, f"trainer.max_time=00:00:{minutes:02d}:{seconds:02d}"], output_dir=run_dir)
    print(f"config: {' '.join(overrides)} | torch {torch.__version__}, {torch.get_num_threads()} threads")
    per_worker = loader_throughput(cfg)
    print(f"loader: one worker prepares {per_worker:.0f} training samples/s (reading + augmentation)")
    before = bare_step(cfg)
    window = TrainingWindow()
    cfg.callbacks.rich_progress_bar = None
    train(cfg, extra_callbacks=[window])
    after = bare_step(cfg)  # measured on both sides of the run: this machine's clock drifts by +-10 %
    bare = (before + after) / 2
    print(
        f"bare step: {bare:.2f} images/s (batch {cfg.data.batch_size}, precision {cfg.trainer.precision}; "
        f"{before:.2f} before the run, {after:.2f} after)"
    )
    seconds_in = window.end - window.start
    end_to_end = window.steps * cfg.data.batch_size / seconds_in
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"segkit.train: {window.steps} steps in {seconds_in:.0f} s = {end_to_end:.2f} images/s end to end "
        f"| {100 * end_to_end / bare:.0f} % of the bare step | in-training validation "
        f"{100 * window.validating / seconds_in:.0f} % of the window | peak RSS {rss:.0f} MiB | run dir {run_dir}"
    )


if __name__ == "__main__":
    main()
