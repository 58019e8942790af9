"""Evaluation: ``python -m segkit.eval ckpt=<run dir | .ckpt | model dir> [data=<data config>] split=val|test``.

Without ``data=``, a model from a run directory is scored on that run's own data config (its
``.hydra/config.yaml``), so a folder run needs no ``data.*`` overrides again.

Scores through :func:`segkit.inference.evaluate` (the prediction path) and writes ``eval.json``,
``per_image.csv``, ``confusion_matrix.png`` and a table on the console; ``report=true`` adds ``report.html``
(worst images first by the run's ``optimized_metric``), ``save_predictions=true`` each image's mask and overlay.
"""

from __future__ import annotations

# ruff: noqa: E402 -- a command line is answered (--help, a typo) before the imports it runs with
from segkit.cli import answer_first

if __name__ == "__main__":  # ~2 s instead of the 10-18 s torch and Lightning take to import
    answer_first("eval", "segkit.eval")

import logging
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from segkit.cli import clear_errors
from segkit.inference.evaluation import evaluate, split_samples
from segkit.inference.model_files import check_classes, run_config
from segkit.inference.predictor import Predictor

log = logging.getLogger(__name__)


def data_config(cfg: DictConfig, predictor: Predictor) -> DictConfig:
    """``cfg.data`` when the command chose one (``data=...``), else the data config of the run the model
    (an ensemble's first member) comes from, resolved as that run resolved it.

    An ensemble of k-fold models saw every fold, so its default ``val`` split is the data config's own
    validation set, not a fold."""
    if cfg.get("data") is not None:
        return cfg.data
    found = run_config(predictor.model.source)
    if found is None:
        raise ValueError(
            f"ckpt={cfg.ckpt} is not inside a run directory (no .hydra/config.yaml beside it or above it), so its "
            "data config is unknown: give one, e.g. data=folder paths.data_dir=<dir>"
        )
    path, run_cfg = found
    log.info("Data: the run's own data config (%s); data=... overrides it", path)
    data = OmegaConf.create(OmegaConf.to_container(run_cfg.data, resolve=True))
    if len(predictor.members) > 1 and data.get("num_folds"):
        if cfg.split != "test" and data.get("val_dataset") is None:
            raise ValueError(
                "the ensemble's members trained on every fold of the training set, and their data config has no "
                "val_dataset to score them on unseen images: give split=test, or data=... with a val_dataset"
            )
        log.info("The ensemble's members trained on every fold: scoring the data config's own %s split", cfg.split)
        data.num_folds = None
    return data


def report_metric(cfg: DictConfig, predictor: Predictor) -> str:
    """The metric the report sorts by: ``report_metric=`` when given, else the ``optimized_metric`` of the run
    the model comes from (``val/...`` renamed to the split scored), else mIoU."""
    if cfg.get("report_metric"):
        return str(cfg.report_metric)
    found = run_config(predictor.model.source)
    metric = str(found[1].get("optimized_metric") or "val/miou") if found is not None else "val/miou"
    return f"{cfg.split}/{metric.rsplit('/', 1)[-1]}"


def run(cfg: DictConfig) -> dict:
    """Evaluate ``cfg.ckpt`` on its data's ``cfg.split`` (the run's own data unless ``data=`` is given)."""
    predictor = Predictor.from_config(cfg)
    data = data_config(cfg, predictor)
    check_classes(predictor.model.metadata, data.num_classes, data.get("class_names"), "the data config")
    start = time.monotonic()
    samples = split_samples(data, cfg.split)
    log.info("Evaluating %s on %d %s images: %s", predictor.model.source, len(samples), cfg.split,
             predictor.describe())  # fmt: skip
    metric = report_metric(cfg, predictor) if cfg.report else None
    scores = evaluate(predictor, samples, cfg.split, Path(cfg.output), report=cfg.report, metric=metric,
                      save_predictions=cfg.save_predictions)  # fmt: skip
    log.info("Done in %.1f s; scores in %s", time.monotonic() - start, Path(cfg.output) / "eval.json")
    return scores


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    """Command-line entry (conf/eval.yaml)."""
    clear_errors(run)(cfg)


if __name__ == "__main__":
    main()
