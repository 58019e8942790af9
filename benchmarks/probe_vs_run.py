"""Where a planned run's step time goes, beside the planner's probe: one run directory's config, measured alone.

    python benchmarks/probe_vs_run.py outputs/<run of +experiment=auto>

It rebuilds the run's network, data and task from its ``.hydra/config.yaml`` (the planned config) and prints,
in ms: the probe as the planner runs it (random data, cross-entropy, fastest of 3 steps), the loader alone
with 0 and 2 workers, a real batch through the run's own loss without a loader, and a bare Lightning fit
(no validation, no loggers, no callbacks) with 0, 1 and 2 workers. Compare them with the run's own it/s in its
``train.log``. Run it on a quiet machine: it times torch, and the 2-core CPU also changes speed by itself.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from train_loop import TrainingWindow  # benchmarks/, first on sys.path when run as a script

from segkit.planning.probe import autocast, time_training_step
from segkit.quiet import silence_known_noise
from segkit.train import resolve_class_weights, weights_normalization


def build(cfg, workers: int):
    """The run's network, datamodule (with ``workers`` loader processes) and task, as ``train()`` builds them."""
    net = instantiate(cfg.model)
    datamodule = instantiate(cfg.data, train_transform=instantiate(cfg.aug.get("train")), val_transform=None,
                             seed=0, num_workers=workers, **weights_normalization(net, cfg.data))  # fmt: skip
    datamodule.setup("fit")
    resolve_class_weights(cfg, datamodule)
    task = instantiate(cfg.task, net=net, class_names=datamodule.class_names, _convert_="all")
    return net, datamodule, task


def loader_ms(datamodule, batches: int = 30) -> float:
    it = iter(datamodule.train_dataloader())
    next(it)  # the workers' start-up
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return (time.perf_counter() - start) / batches * 1000


def real_batch_ms(net, task, batch, precision: str, steps: int = 5) -> float:
    """Fastest of ``steps`` optimisation steps on one real batch through the run's loss (after a warm-up)."""
    net = net.to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    image = batch["image"].contiguous(memory_format=torch.channels_last)
    seconds = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        with autocast("cpu", precision):
            loss = task.loss(net(image).float(), batch["mask"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
    return min(seconds[1:]) * 1000


def fit_ms(cfg, workers: int, precision: str, steps: int = 200) -> float:
    _, datamodule, task = build(cfg, workers)
    clock = TrainingWindow(skip=20)  # the steps after a warm-up
    trainer = pl.Trainer(accelerator="cpu", max_steps=steps, limit_val_batches=0, logger=False, precision=precision,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[clock])  # fmt: skip
    trainer.fit(task, datamodule=datamodule)
    return (clock.end - clock.start) / clock.steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args()
    silence_known_noise()
    cfg = OmegaConf.load(args.run_dir / ".hydra" / "config.yaml")
    precision = str(cfg.trainer.precision)
    pl.seed_everything(0)
    net, datamodule, task = build(cfg, 0)
    batch, patch = int(cfg.data.batch_size), tuple(cfg.data.patch_size)
    probe = time_training_step(instantiate(cfg.model), batch, int(cfg.model.in_channels), patch,
                               int(cfg.data.num_classes), "cpu", precision, channels_last=True)  # fmt: skip
    rows = [("the probe (random data, cross-entropy, fastest of 3)", probe["seconds"] * 1000)]
    for workers in (0, 2):
        rows.append((f"the loader alone, {workers} workers (a batch)", loader_ms(build(cfg, workers)[1])))
    real = real_batch_ms(net, task, next(iter(datamodule.train_dataloader())), precision)
    rows.append((f"a real batch through the run's loss ({type(task.loss).__name__}), no loader", real))
    for workers in (0, 1, 2):
        rows.append((f"a bare Lightning fit, {workers} workers", fit_ms(cfg, workers, precision)))
    print(f"\n{args.run_dir}: {cfg.model.get('base_channels')} channels, batch {batch} x {patch}, {precision}")
    for what, ms in rows:
        print(f"  {what:<70} {ms:7.0f} ms")


if __name__ == "__main__":
    main()
