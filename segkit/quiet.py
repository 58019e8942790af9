"""Silence the messages of dependencies that are noise to a segkit user, by exact message, never by category.

Lightning's hints about its paid services, and deprecations inside Lightning and timm that a user cannot act
on, are filtered; any other warning still shows. The ONNX exporter's INFO logging is raised to WARNING.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

NOISY_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",  # torch deprecation triggered inside Lightning
    r"Precision .* is not supported by the model summary",  # the summary's size estimate; training is fine
    # an epoch shorter than trainer.log_every_n_steps (a small folder): Lightning counts the interval over
    # the whole run, not within an epoch, so the steps are logged all the same
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    # under DDP, once per epoch-level value the tasks log: their val/test scores are computed from torchmetrics
    # states already summed over the processes, and train/loss is each process's own mean on purpose (a sync
    # would all-reduce every step), so 20-odd lines of advice apply to none of them
    r"It is recommended to use `self.log\('(train|val|test)/.*sync_dist=True\)` when logging on epoch level",
)
# raised while a dependency is imported, so before any command runs: timm's HRNet declares a
# torch.jit.interface, which torch >= 2.10 deprecates, and every segkit command would open with it
NOISY_IMPORT_WARNINGS = (r"`torch.jit.interface` is deprecated",)
NOISY_LOG_PREFIXES = ("💡 Tip:",)  # Lightning's adverts for litlogger / litmodels
# INFO records of a dependency's inner workings, which Hydra's logging (root at INFO) would print: onnx_ir and
# onnxscript's optimizer report every constant they folded or did not fold (11 of an ONNX export's 13 lines);
# alembic, imported by Optuna's sweeper and MLflow's store, announces each of its plugins and migrations, and
# MLflow's store says "Creating initial MLflow database tables..." in a format of its own
QUIET_LOGGERS = ("onnx_ir", "onnxscript", "alembic", "mlflow.store.db.utils")


class _DropPrefixes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISY_LOG_PREFIXES)


def silence_known_noise() -> None:
    """Install the filters (idempotent)."""
    for pattern in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropPrefixes) for f in logger.filters):
        logger.addFilter(_DropPrefixes())
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def quiet_import() -> Iterator[None]:
    """Import a dependency without the warnings it is known to raise at import time (``NOISY_IMPORT_WARNINGS``);
    the filters are restored afterwards, so a user's own code still sees those warnings."""
    with warnings.catch_warnings():
        for pattern in NOISY_IMPORT_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        yield


def no_colour_codes_in_files() -> None:
    """A command whose standard error is a file or a pipe (CI, SLURM, ``nohup``, ``| tee``) sets ``NO_COLOR=1``
    (no-color.org), unless it is set: Optuna's lines in a sweep's log carried ANSI colour codes (its colorlog
    formatter colours whatever the stream). Commands only: a notebook's stderr is no terminal either."""
    if not sys.stderr.isatty():
        os.environ.setdefault("NO_COLOR", "1")


def console_info_on_rank_zero_only(rank: int | None = None) -> None:
    """Under DDP every process runs the command, and all of them print to the one terminal: 8 GPUs showed each
    INFO line ("Training in …", "Final validation …") 8 times. On processes of rank > 0 the console handlers
    keep WARNING and above; each process's log file (Lightning-launched ranks write ``train_ddp_process_<r>.log``)
    keeps everything, and a warning or error from any rank still reaches the terminal.

    ``rank``: Lightning's reading of ``RANK`` / ``LOCAL_RANK`` / ``SLURM_PROCID``, which the launcher (Lightning,
    torchrun, srun) sets before the process starts."""
    if rank is None:
        from pytorch_lightning.utilities import rank_zero_only

        rank = rank_zero_only.rank
    if not rank:
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(max(handler.level, logging.WARNING))
