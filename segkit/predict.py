"""Prediction: ``python -m segkit.predict ckpt=<run | .ckpt | model dir> input=<file | folder | glob> output=<dir>``.

``run(cfg)`` is the whole command, top to bottom; :class:`segkit.inference.Predictor` is the Python API
behind it."""

from __future__ import annotations

# ruff: noqa: E402 -- a command line is answered (--help, a typo) before the imports it runs with
from segkit.cli import answer_first

if __name__ == "__main__":  # ~2 s instead of the 10-18 s torch and Lightning take to import
    answer_first("predict", "segkit.predict")

import logging
import time
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig

from segkit.cli import clear_errors
from segkit.data.io import IMAGE_SUFFIXES
from segkit.inference.files import FileProgress, check_output_dir, list_inputs, output_stems, save_index_png
from segkit.inference.predictor import Predictor, class_indices
from segkit.visualize import save_overlay_with_legend

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> dict:
    """Predict every input file; returns the summary (images, skipped, seconds, images/s)."""
    predictor = Predictor.from_config(cfg)
    inputs = list_inputs(str(cfg.input))
    output = Path(cfg.output)
    check_output_dir(output, inputs)
    output.mkdir(parents=True, exist_ok=True)
    meta = predictor.model.metadata
    log.info("Predicting %d file(s) with %s: %s", len(inputs), predictor.model.source, predictor.describe())
    stems = output_stems([p for p in inputs if p.suffix.lower() in IMAGE_SUFFIXES])
    progress, written, skipped = FileProgress(len(inputs)), 0, []
    start = time.monotonic()
    for i, path in enumerate(inputs, start=1):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((path, "not an image file"))
            continue
        try:
            image = predictor.read(path)
        except ValueError as err:  # corrupt or unreadable: name it, skip it, carry on
            log.warning("Skipping %s: %s", path, err)
            skipped.append((path, str(err)))
            continue
        logits = predictor.logits(image)
        mask = class_indices(logits)
        stem = stems[path]
        save_index_png(mask, meta["palette"], output / f"{stem}.png")
        if cfg.save_overlay:
            save_overlay_with_legend(image, mask, meta["class_names"], meta["palette"], output / f"{stem}_overlay.png")
        if cfg.save_probabilities:
            np.save(output / f"{stem}_probs.npy", logits.softmax(dim=0).numpy().astype(np.float16))
        written += 1
        progress.update(i, path.name)
    progress.close()
    seconds = time.monotonic() - start
    summary = {"images": written, "skipped": len(skipped), "seconds": round(seconds, 2),
               "images_per_second": round(written / seconds, 3) if seconds > 0 else 0.0}  # fmt: skip
    for path, why in skipped:
        log.warning("Skipped %s (%s)", path, why)
    log.info("Done: %d image(s) written to %s, %d skipped, %.1f s, %.2f images/s",
             written, output, len(skipped), seconds, summary["images_per_second"])  # fmt: skip
    return summary


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    """Command-line entry (conf/predict.yaml)."""
    clear_errors(run)(cfg)


if __name__ == "__main__":
    main()
