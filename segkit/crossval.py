"""Cross-validation summary: ``python -m segkit.crossval dir=<multirun dir>``.

After ``python -m segkit.train -m ... data.num_folds=5 data.fold=0,1,2,3,4`` every fold run holds its
``metrics.json`` (the final weights scored on its own validation fold) and ``folds.json`` (which samples
trained and which validated). This reads them, checks that the folds belong together (same K and split seed,
validation folds disjoint and covering the training set), and reports each fold's scores and the
cross-validated mean and standard deviation, as nnU-Net reports its five folds.
"""

from __future__ import annotations

# ruff: noqa: E402 -- a command line is answered (--help, a typo) before the imports it runs with
from segkit.cli import answer_first

if __name__ == "__main__":  # ~2 s instead of the 10-18 s torch and Lightning take to import
    answer_first("crossval", "segkit.crossval")

import json
import logging
from pathlib import Path

import hydra
import numpy as np
from omegaconf import DictConfig
from rich.table import Table

from segkit.cli import clear_errors
from segkit.metrics.output import print_written_table, strict_json

log = logging.getLogger(__name__)


def fold_runs(directory: Path) -> dict[int, tuple[Path, dict, dict]]:
    """``{fold: (run dir, metrics.json, folds.json)}`` for the finished fold runs under ``directory``."""
    runs: dict[int, tuple[Path, dict, dict]] = {}
    for run in sorted(p for p in directory.iterdir() if (p / "folds.json").is_file()):
        record = json.loads((run / "folds.json").read_text())
        if not (run / "metrics.json").is_file():
            log.warning("%s has no metrics.json (the run did not finish): left out", run)
            continue
        fold = int(record["fold"])
        if fold in runs:
            raise ValueError(f"fold {fold} appears twice: {runs[fold][0]} and {run}; summarise one multirun at a time")
        runs[fold] = (run, json.loads((run / "metrics.json").read_text()), record)
    if not runs:
        raise FileNotFoundError(
            f"no fold runs under {directory} (sub-folders with folds.json and metrics.json); train them with "
            "python -m segkit.train -m data.num_folds=5 data.fold=0,1,2,3,4"
        )
    return runs


def check_folds(runs: dict[int, tuple[Path, dict, dict]]) -> tuple[int, list[int]]:
    """``(K, missing folds)``; raises when the runs come from different splits or their folds overlap."""
    records = [record for _, _, record in runs.values()]
    keys = {(r["num_folds"], r["split_seed"]) for r in records}
    if len(keys) > 1:
        raise ValueError(f"the runs come from different splits (num_folds, split_seed): {sorted(keys)}")
    ((num_folds, _),) = keys
    seen: dict[str, int] = {}
    for fold, (_, _, record) in sorted(runs.items()):
        for name in record["val"]:
            if name in seen:
                raise ValueError(f"sample {name} validates in folds {seen[name]} and {fold}: the folds overlap")
            seen[name] = fold
    everything = set(records[0]["train"]) | set(records[0]["val"])
    missing = [f for f in range(num_folds) if f not in runs]
    if not missing and set(seen) != everything:
        raise ValueError(f"the validation folds cover {len(seen)} of the {len(everything)} training samples")
    return num_folds, missing


def summarize(directory: str | Path) -> dict:
    """Each fold's ``val/*`` scores and their mean and standard deviation over folds; written to
    ``<directory>/crossval.json`` and printed as a table."""
    directory = Path(directory)
    runs = fold_runs(directory)
    num_folds, missing = check_folds(runs)
    if missing:
        log.warning("Folds %s of %d have no finished run: the mean is over %d folds", missing, num_folds, len(runs))
    names = sorted({k for _, metrics, _ in runs.values() for k, v in metrics.items()
                    if k.startswith("val/") and isinstance(v, int | float)})  # fmt: skip
    per_fold = {fold: {k: runs[fold][1].get(k) for k in names} for fold in sorted(runs)}
    summary: dict = {"num_folds": num_folds, "folds": per_fold, "missing_folds": missing, "mean": {}, "std": {}}
    for name in names:
        values = np.array([v[name] for v in per_fold.values() if v[name] is not None], dtype=float)
        summary["mean"][name] = float(values.mean()) if len(values) else None
        summary["std"][name] = float(values.std(ddof=1)) if len(values) > 1 else None
    (directory / "crossval.json").write_text(json.dumps(strict_json(summary), indent=2) + "\n")
    print_table(summary, directory)
    return summary


def print_table(summary: dict, directory: Path) -> None:
    """Metrics as rows, folds then mean ± std as columns."""
    table = Table(title=f"{len(summary['folds'])}-fold cross-validation (final weights)")
    table.add_column("metric", overflow="fold")
    for fold in summary["folds"]:
        table.add_column(f"fold {fold}", justify="right")
    table.add_column("mean ± std", justify="right")
    for name, mean in summary["mean"].items():
        cells = [_cell(v[name]) for v in summary["folds"].values()]
        std = summary["std"][name]
        table.add_row(name, *cells, f"{_cell(mean)} ± {_cell(std)}")
    print_written_table(table, directory / "crossval.json")


def _cell(value: float | None) -> str:
    return "—" if value is None or not np.isfinite(value) else f"{value:.4f}"


def run(cfg: DictConfig) -> dict:
    """Summarise the fold runs in ``cfg.dir``."""
    return summarize(cfg.dir)


@hydra.main(version_base="1.3", config_path="conf", config_name="crossval")
def main(cfg: DictConfig) -> None:
    """Command-line entry (conf/crossval.yaml)."""
    clear_errors(run)(cfg)


if __name__ == "__main__":
    main()
