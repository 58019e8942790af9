"""Training entry point: ``python -m segkit.train +experiment=NAME [overrides]``.

``train(cfg)`` is the whole story in order: seed, data, network, task, trainer, fit, final validation,
``metrics.json``. Tests call the same function the command line runs.
"""

from __future__ import annotations

# ruff: noqa: E402 -- a command line is answered (--help, a typo) before the imports it runs with
from segkit.cli import answer_first

if __name__ == "__main__":  # ~2 s instead of the 10-18 s torch and Lightning take to import
    answer_first("train", "segkit.train")

import hashlib
import json
import logging
import os
import signal
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint, ProgressBar
from pytorch_lightning.plugins.environments import SLURMEnvironment
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException
from torch import nn

from segkit.callbacks import LastCheckpoint, monitoring_checkpoint
from segkit.checkpoint import (
    AtomicCheckpointIO,
    newest_run_checkpoint,
    remove_stale_temporaries,
    resolve_resume_path,
)
from segkit.cli import clear_errors, in_multirun
from segkit.data.class_weights import POWER_BY_NAME, median_frequency_weights
from segkit.data.datamodule import unwrapped
from segkit.inference.model_files import LoadedModel
from segkit.metrics.output import write_metrics
from segkit.planning.planner import planned_config
from segkit.precision import warn_slow_cpu_precision
from segkit.quiet import console_info_on_rank_zero_only, no_colour_codes_in_files, silence_known_noise
from segkit.tracking import log_config, log_run_files, logger_node

log = logging.getLogger(__name__)


def build_callbacks(cfg: DictConfig) -> list[pl.Callback]:
    """Instantiate every callback node under ``cfg.callbacks`` (``null`` entries, or factories answering
    ``None``, switch one off).

    With ``trainer.fast_dev_run`` no checkpoint callback is kept: Lightning's ``ModelCheckpoint.on_train_end``
    writes ``last.ckpt`` even then, although a wiring check should leave nothing behind.
    """
    nodes = (cfg.get("callbacks") or {}).values()
    callbacks = [instantiate(node) for node in nodes if isinstance(node, DictConfig)]  # not export_weights
    callbacks = [c for c in callbacks if c is not None]
    if cfg.trainer.get("fast_dev_run"):
        callbacks = [c for c in callbacks if not isinstance(c, ModelCheckpoint)]
    return callbacks


def build_loggers(cfg: DictConfig) -> list:
    """Instantiate every logger node under ``cfg.logger`` (a sweep's MLflow trials as children of one run)."""
    sweep_dir = None
    if in_multirun():
        sweep_dir = Path(HydraConfig.get().sweep.dir)
    nodes = [node for node in (cfg.get("logger") or {}).values() if node is not None]
    return [instantiate(logger_node(node, sweep_dir)) for node in nodes]


@rank_zero_only
def report(metrics: dict, output_dir: Path) -> None:
    """Write ``metrics.json`` and print the final metrics as a table (rank 0 only)."""
    write_metrics(metrics, output_dir / "metrics.json", "final metrics")


@rank_zero_only
def save_model_folder(task: pl.LightningModule, datamodule: pl.LightningDataModule, directory: Path,
                      weights: dict) -> None:  # fmt: skip
    """Write the handed-over weights (``callbacks.export_weights``) as ``model/``: safetensors + JSON, loadable
    without Hydra; its metadata says which weights they are."""
    if getattr(task.net, "config", None) is None:
        log.info("Not writing %s: %s is not a segkit network", directory, type(task.net).__name__)
        return
    meta = task.inference_metadata(datamodule)
    meta["weights"] = weights  # {"weights": "final" | "best", "source": where they came from}
    task.net.save_pretrained(directory, meta)
    how = f"segkit.load_model or python -m segkit.predict ckpt={directory}"
    if task.task_name != "segmentation":  # predict, eval and serve take segmentation models, and say so
        how = f"segkit.load_model('{directory}') gives the network and its class names"
    log.info("Model for inference: %s (%s)", directory, how)


@rank_zero_only
def save_config(cfg: DictConfig, output_dir: Path) -> None:
    """Write the config this run trains with as ``<run>/.hydra/config.yaml``; ``segkit.eval`` reads the run's
    data config from it.

    The command line's Hydra writes that file before the task starts, so for a planned run
    (``+experiment=auto``) it holds the typed config, not the planned one: eval would then read 0/255 masks
    without the plan's mapping and score the foreground as ignored. Written here, it is the trained config
    for every run, from the command line or from Python; the typed overrides stay in ``overrides.yaml``.

    ``trainer=cpu``'s ``${cpu_precision:}`` is saved resolved: the file says which precision this machine
    trained in (bf16 or fp32), not which one another machine would choose when it reads the file."""
    path = output_dir / ".hydra" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    trained = cfg.copy()
    if OmegaConf.select(cfg, "trainer.precision") is not None:
        trained.trainer.precision = cfg.trainer.precision
    OmegaConf.save(trained, path)


@rank_zero_only
def save_split(datamodule: pl.LightningDataModule, output_dir: Path) -> None:
    """Write ``folds.json``: which samples trained and which validated, for a k-fold run (``data.num_folds``)."""
    split = getattr(datamodule, "split", None)
    if split is None:
        return
    record = {"num_folds": datamodule.num_folds, "fold": datamodule.fold, "split_seed": datamodule.split_seed, **split}
    (output_dir / "folds.json").write_text(json.dumps(record, indent=1) + "\n")
    log.info("Fold %d of %d: %d training, %d validation samples (folds.json)", datamodule.fold,
             datamodule.num_folds, len(split["train"]), len(split["val"]))  # fmt: skip


def score_test_split(task: pl.LightningModule, datamodule: pl.LightningDataModule, cfg: DictConfig,
                     output: Path, weights: dict) -> dict[str, float]:  # fmt: skip
    """Score the handed-over weights on the test split through segkit.eval's path (rank 0; {} if none)."""
    from segkit.inference import Predictor, evaluate, split_samples

    if task.global_rank != 0 or task.task_name != "segmentation":
        return {}
    try:
        samples = split_samples(cfg.data, "test")
    except (ValueError, FileNotFoundError) as err:
        log.warning("test_after_fit: no test split to score (%s)", err)
        return {}
    meta = task.inference_metadata(datamodule)
    predictor = Predictor(LoadedModel(task.net.eval(), meta, output), device=str(task.device))
    log.info("Testing the handed-over (%s) weights on %d test images", weights["weights"], len(samples))
    return evaluate(predictor, samples, "test", output)


def weights_normalization(net: nn.Module, data_cfg: DictConfig) -> dict:
    """Mean/std that pretrained encoder weights expect, used when the data config leaves them null."""
    report = getattr(getattr(net, "encoder", None), "load_report", None)
    if data_cfg.get("mean") is not None or report is None or report.mean is None:
        return {}
    log.info("Normalising with the pretrained weights' mean=%s std=%s", report.mean, report.std)
    return {"mean": list(report.mean), "std": list(report.std)}


def _last_checkpoint(trainer: pl.Trainer, output_dir: Path) -> Path | None:
    """The newest resumable file: a checkpoint callback's ``last.ckpt``, else ``<run>/checkpoints/last.ckpt``."""
    checkpoint = monitoring_checkpoint(trainer)
    folders = [Path(checkpoint.dirpath)] if checkpoint is not None and checkpoint.dirpath else []
    for folder in [*folders, output_dir / "checkpoints"]:
        if (folder / "last.ckpt").is_file():
            return folder / "last.ckpt"
    return None


def describe(net: nn.Module) -> str:
    """One line on the network: class, encoder, parameter counts (instead of Lightning's FLOP-less table)."""
    total = sum(p.numel() for p in net.parameters())
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    encoder = getattr(getattr(net, "encoder", None), "name", None) or type(getattr(net, "encoder", net)).__name__
    return (
        f"{type(net).__name__} (encoder {encoder}): {total / 1e6:.2f} M parameters, {trainable / 1e6:.2f} M trainable"
    )


def resolve_class_weights(cfg: DictConfig, datamodule: pl.LightningDataModule) -> None:
    """``task.loss.class_weights: median_frequency`` (or its square root, ``sqrt_median_frequency``) -> the
    weights computed from the training masks."""
    loss = cfg.task.get("loss")
    name = loss.get("class_weights") if loss is not None else None
    if not isinstance(name, str) or name not in POWER_BY_NAME:
        return
    weights = median_frequency_weights(datamodule.train_set, int(cfg.data.num_classes), POWER_BY_NAME[name])
    log.info("Class weights (%s): %s", name, ", ".join(f"{w:.3f}" for w in weights))
    cfg.task.loss.class_weights = weights


def compose_config(overrides: Sequence[str] = (), output_dir: str | Path | None = None) -> DictConfig:
    """The config ``python -m segkit.train OVERRIDES`` would run, composed from Python (notebooks, scripts, tests).

    Args:
        overrides: command-line overrides, e.g. ``["+experiment=quickstart", "trainer.max_epochs=1"]``.
        output_dir: the run directory; by default ``<paths.log_dir>/<run_name>/<timestamp>`` as on the command
            line (``SEGKIT_RUN_ID`` replaces the timestamp there too).
    """
    with initialize_config_module(config_module="segkit.conf", version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
        if output_dir is None:
            run_id = os.environ.get("SEGKIT_RUN_ID") or datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
            output_dir = Path(cfg.paths.log_dir) / cfg.run_name / run_id
        cfg.paths.output_dir = str(output_dir)
        return planned_config(cfg, list(overrides), partial(compose, "train"), output_dir)


def check_strict_weights(model_cfg: DictConfig) -> None:
    """Refuse ``model.strict_weights=true`` without ``model.weights``: it asks that every encoder tensor come
    from a file, and there is none, so the run would train from scratch under a name that says otherwise.
    (An experiment's ``weights: ???`` cannot demand them: OmegaConf keeps the value it merges ``???`` onto.)
    Only training asks; a saved model rebuilds with its weights dropped, as they are in its checkpoint."""
    if model_cfg.get("strict_weights") and not model_cfg.get("weights"):
        raise ValueError(
            "model.strict_weights=true needs model.weights (file:<path>, e.g. another run's checkpoints/last.ckpt, "
            "or a timm tag such as imagenet): nothing to load every encoder tensor from"
        )


def check_input_channels(net: nn.Module, datamodule: pl.LightningDataModule) -> None:
    """Refuse a network whose first layer takes other channels than the training images have: the paper's
    U-Net (``model=unet_paper``, one channel, for EM slices) on RGB images failed inside torch's first conv
    ("expected input[8, 3, 188, 188] to have 1 channels"). One training sample, as the loader gives it, says."""
    expected = getattr(net, "config", {}).get("in_channels")
    if expected is None or datamodule.train_set is None:
        return
    channels = int(torch.as_tensor(datamodule.train_set[0]["image"]).shape[0])
    if channels == int(expected):
        return
    dataset = unwrapped(datamodule.train_set)
    where = f" in {dataset.root}" if hasattr(dataset, "root") else ""
    grey = ", or read them as grey: data.train_dataset.color_mode=gray" if expected == 1 and hasattr(
        dataset, "color_mode") else ""  # fmt: skip
    raise ValueError(
        f"the network takes {expected}-channel images (model.in_channels={expected}) but the training images"
        f"{where} have {channels}: set model.in_channels={channels}{grey}"
    )


def check_accelerator(trainer_cfg: DictConfig) -> None:
    """Refuse ``trainer=gpu`` where torch sees no GPU, saying why and what to do instead: Lightning's own
    answer is "No supported gpu backend found!". Lightning's ``gpu`` is CUDA, or MPS on a Mac."""
    accelerator = str(trainer_cfg.get("accelerator"))
    if accelerator not in ("gpu", "cuda") or torch.cuda.is_available() or torch.backends.mps.is_available():
        return
    cpu_only = torch.version.cuda is None
    why = (f"torch {torch.__version__} is a CPU-only build (install a CUDA one: pytorch.org)" if cpu_only
           else f"torch {torch.__version__} sees no CUDA device (nvidia-smi, CUDA_VISIBLE_DEVICES)")  # fmt: skip
    raise ValueError(f"trainer.accelerator={accelerator} (trainer=gpu), but {why}; on the CPU: trainer=cpu")


def check_training_length(trainer_cfg: DictConfig) -> bool:
    """Warn (and return ``True``) when the trainer stops before its first step: Lightning returns at once, and
    the run scores and hands over its initial weights, which it used to do without a word. Kept possible on
    purpose: an untrained network's scores are a baseline (``tests/test_train.py`` measures learning so)."""
    for key in ("max_epochs", "max_steps"):
        if trainer_cfg.get(key) == 0:
            log.warning("trainer.%s=0 trains nothing: the run scores and hands over its initial weights (give "
                        "a length, or -1 for no limit on it)", key)  # fmt: skip
            return True
    return False


def train(cfg: DictConfig, extra_callbacks: list[pl.Callback] | None = None) -> dict:
    """Fit the configured task and return what ``metrics.json`` holds: the final weights' validation scores
    (``{"val/miou": ..., ...}``), the best checkpoint's (``best/val/...``), test scores with
    ``test_after_fit``, and under ``"weights"`` which weights each group comes from.

    ``extra_callbacks`` join the configured ones (benchmarks and tests measure through them).
    """
    silence_known_noise()
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)

    check_strict_weights(cfg.model)
    check_accelerator(cfg.trainer)
    check_training_length(cfg.trainer)
    warn_slow_cpu_precision(str(cfg.trainer.get("accelerator", "auto")), cfg.trainer.get("precision"))
    net = instantiate(cfg.model)
    aug = cfg.get("aug") or {}
    datamodule = instantiate(
        cfg.data,
        train_transform=instantiate(aug.get("train")),
        val_transform=instantiate(aug.get("val")),
        seed=cfg.get("seed"),
        **weights_normalization(net, cfg.data),
    )
    datamodule.setup("fit")  # checks every file now, before any trainer is built
    check_input_channels(net, datamodule)
    resolve_class_weights(cfg, datamodule)
    # Class names may come from the data itself (ImageFolder folders), so the task takes the datamodule's.
    task = instantiate(cfg.task, net=net, class_names=datamodule.class_names, _convert_="all")
    callbacks = [*build_callbacks(cfg), *(extra_callbacks or [])]
    loggers = build_loggers(cfg)
    log_config(loggers, cfg)
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
        # no bar in the callbacks (e.g. output piped to a file): segkit's LogProgress lines are the progress
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks),
    )

    ckpt_path = resolve_resume_path(cfg.get("ckpt_path"), output_dir / "checkpoints")
    if ckpt_path is None and SLURMEnvironment.detect():
        ckpt_path = newest_run_checkpoint(output_dir)  # a requeued SLURM job continues where it stopped
    if ckpt_path:
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)  # Lightning loads it again
        log.info(
            "Resuming training from %s (epoch %d, global step %d)", ckpt_path, state["epoch"], state["global_step"]
        )
    save_config(cfg, output_dir)
    save_split(datamodule, output_dir)
    remove_stale_temporaries(output_dir / "checkpoints")
    log.info("Training in %s", output_dir)
    log.info("Model: %s", describe(net))
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
    except SIGTERMException:
        # Lightning stops after the current batch; CheckpointOnSigterm has saved last.ckpt by now. The exit
        # status is the shell's for a SIGTERM death (128 + 15), so schedulers and scripts see an interrupted
        # run, not a finished one (Lightning's own exception would exit with 0).
        last = _last_checkpoint(trainer, output_dir)
        where = f"resume with ckpt_path={last}" if last else "no checkpoint was written"
        log.warning("Training stopped by signal (SIGTERM) at global step %d; %s", trainer.global_step, where)
        raise SystemExit(128 + signal.SIGTERM) from None
    except BaseException:
        last = _last_checkpoint(trainer, output_dir)
        if last:
            log.error("Training stopped with an error. Last good state: %s (resume with ckpt_path=%s)", last, last)
        else:
            log.error("Training stopped with an error before any checkpoint was written.")
        raise

    metrics, handed_over = score_final_and_best(cfg, trainer, task, datamodule)
    if not cfg.trainer.get("fast_dev_run"):  # a wiring check leaves no model behind
        save_model_folder(task, datamodule, output_dir / "model", handed_over)
    if cfg.get("test_after_fit"):
        test = score_test_split(task, datamodule, cfg, output_dir / "test", handed_over)
        metrics.update(test)
        if test:
            metrics["weights"]["test/"] = metrics["weights"]["model/"]
    report(metrics, output_dir)
    log_run_files(loggers, output_dir, metrics, trainer.global_step)
    return metrics


def _validate(trainer: pl.Trainer, task: pl.LightningModule, datamodule: pl.LightningDataModule,
              ckpt_path: str | None) -> dict[str, float]:  # fmt: skip
    results = trainer.validate(task, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    if not results:  # validation switched off (trainer.limit_val_batches=0)
        return {}
    return {k: float(v) for k, v in results[0].items() if k.startswith("val/")}


def score_final_and_best(cfg: DictConfig, trainer: pl.Trainer, task: pl.LightningModule,
                         datamodule: pl.LightningDataModule) -> tuple[dict, dict]:  # fmt: skip
    """One full validation pass of the final weights (``val/*``) and of the best checkpoint (``best/val/*``),
    then leave ``task`` holding the weights ``callbacks.export_weights`` names (``final`` or ``best``); returns
    the metrics and which weights were handed over.

    ``metrics["weights"]`` says where each group of figures comes from. The final weights are the honest
    figure: the best checkpoint was picked on this same validation split, so its score is optimistic.
    """
    step, output_dir = trainer.global_step, Path(cfg.paths.output_dir).resolve()
    final_state = {k: v.detach().clone() for k, v in task.state_dict().items()}
    checkpoint = monitoring_checkpoint(trainer)
    best = checkpoint.best_model_path if checkpoint is not None else ""
    # The final weights are validated from last.ckpt, which LastCheckpoint wrote at this very step: under SLURM,
    # Lightning's validate(ckpt_path=None) would load the run's hpc_ckpt_*.ckpt instead of the model in memory.
    last = next((c for c in trainer.callbacks if isinstance(c, LastCheckpoint)), None)
    final_ckpt = last.last_model_path if last is not None and last._last_global_step_saved == step else None
    log.info("Final validation of the final weights (global step %d)", step)
    metrics: dict = _validate(trainer, task, datamodule, final_ckpt or None)
    weights = {"val/": f"final weights (global step {step})"}
    if best:
        log.info("Validation of the best checkpoint by %s (%s): %s", checkpoint.monitor, checkpoint.mode, best)
        metrics.update({f"best/{k}": v for k, v in _validate(trainer, task, datamodule, best).items()})
        where = Path(best).resolve()
        where = where.relative_to(output_dir) if where.is_relative_to(output_dir) else where
        weights["best/val/"] = f"best checkpoint by {checkpoint.monitor} ({checkpoint.mode}): {where}"
    export = cfg.get("callbacks", {}).get("export_weights", "final")
    if export not in ("final", "best"):
        raise ValueError(f"callbacks.export_weights must be final or best, got {export!r}")
    if export == "best" and not best:
        log.warning("callbacks.export_weights=best but no best checkpoint was kept: handing over the final weights")
        export = "final"
    if export == "final":
        task.load_state_dict(final_state)
    weights["model/"] = weights["val/" if export == "final" else "best/val/"]
    metrics["weights"] = weights
    return metrics, {"weights": export, "source": weights["model/"]}


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Command-line entry; returns ``optimized_metric`` of the final weights, for Hydra sweepers."""
    console_info_on_rank_zero_only()  # Hydra has set up the console and the log file by now
    metrics = clear_errors(plan_and_train)(cfg)
    return metrics.get(cfg.get("optimized_metric", "val/miou"))


def plan_and_train(cfg: DictConfig) -> dict:
    """``+experiment=auto``: plan from the data and the budget (every typed key still wins), then train.

    In a multirun whose jobs differ only in their fold (``-m data.fold=0,1,2,3,4``), the first job's plan is
    shared with the others through the sweep directory: every fold trains the same planned recipe."""
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    shared = None
    if in_multirun():
        same_plan = sorted(o for o in overrides if not o.startswith(("data.fold=", "seed=")))
        key = hashlib.sha256("\n".join(same_plan).encode()).hexdigest()[:12]
        shared = Path(hydra_cfg.sweep.dir) / "plans" / key
    cfg = planned_config(cfg, overrides, partial(compose, "train"), cfg.paths.output_dir, shared)
    return train(cfg)


if __name__ == "__main__":
    silence_known_noise()  # before Hydra loads a sweeper (Optuna's imports log through Hydra's root handler)
    no_colour_codes_in_files()
    main()
