"""What every command does around its ``run(cfg)``: a close match for a misspelt key before Hydra composes,
and expected errors as one clear line, on the console and in the command's log.

Hydra answers ``trainer.max_epoch=2`` with "use +trainer.max_epoch", which only leads to a second error; a
missing folder arrives after a 15-line traceback. ``HYDRA_FULL_ERROR=1`` still shows every traceback.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from functools import wraps
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

EXPECTED_ERRORS = (FileNotFoundError, ValueError)


def override_key(item: str) -> str:
    """The key an override sets: ``model.depth`` for ``++model.depth=4``, ``~model.depth`` and so on."""
    return item.split("=", 1)[0].lstrip("+~")


def for_the_app(item: str) -> bool:
    """Whether an override is Hydra's own (``hydra.run.dir=…``, ``hydra/job_logging=…``, with any prefix): it
    configures the running app, not the composed config a command runs with."""
    return re.split(r"[./]", override_key(item), maxsplit=1)[0] == "hydra"


def command_line_problem(config_name: str, overrides: Sequence[str]) -> str | None:
    """What is wrong with a command line before Hydra runs it: a key the config lacks (with its close match) or
    a value the command needs that was not given (a ``???`` such as ``ckpt=``, with the usage line); ``None``
    when the overrides compose with every value given, or fail for another reason, which Hydra then reports."""
    from hydra import compose, initialize_config_module
    from hydra.errors import ConfigCompositionException

    plain = [o for o in overrides if "=" in o and not o.startswith("-") and not for_the_app(o)]
    with initialize_config_module(config_module="segkit.conf", version_base="1.3"):
        try:
            cfg = compose(config_name=config_name, overrides=plain, return_hydra_config=True)
        except ConfigCompositionException as err:
            return close_key(config_name, plain, err)
    missing = [key for key in unset_keys(cfg) if not key.startswith("hydra.")]
    if missing:
        usage = cfg.hydra.help.template.splitlines()[0]
        return f"needs {', '.join(f'{key}=' for key in missing)} (see --help)\n{usage}"
    if problem := unused_key_problem(cfg, {override_key(o) for o in plain}):
        return problem
    return None if "-m" in overrides or "--multirun" in overrides else run_dir_problem(cfg)


def unused_key_problem(cfg: DictConfig, typed: set[str]) -> str | None:
    """A typed key the composed config never reads, which the run used to pass over without a word:
    ``data.fold`` without ``data.num_folds``, and ``data.val_fraction`` beside a ``val_dataset`` (a ``val/``
    folder), where the run validated on that folder and trained on all of ``train/``."""
    data = cfg.get("data")
    if not isinstance(data, DictConfig):
        return None
    if "data.fold" in typed and data.get("fold") is not None and not data.get("num_folds"):
        return f"data.fold={data.get('fold')} picks one of data.num_folds folds: give data.num_folds=K too"
    if "data.val_fraction" not in typed or data.get("val_dataset") is None or data.get("num_folds"):
        return None  # with folds, the fold validates instead and val_fraction is not read, as the README says
    return (
        f"data.val_fraction={data.get('val_fraction')} holds out a share of train/ only without a val_dataset, "
        "and this data config validates on its val_dataset (a val/ folder): add data.val_dataset=null to hold "
        "out the share, or drop data.val_fraction"
    )


def run_dir_problem(cfg: DictConfig) -> str | None:
    """Why the folder a command writes into (``hydra.run.dir``) cannot be made: an existing file there (Hydra
    would fail on ``os.mkdir`` with a traceback). ``None`` when it can, or when the folder is only known once
    Hydra runs (an interpolation of Hydra's own)."""
    raw = OmegaConf.to_container(cfg.hydra.run, resolve=False)["dir"]
    try:
        path = Path(str(OmegaConf.select(cfg, "hydra.run.dir", throw_on_resolution_failure=True)))
    except Exception:  # ${hydra:...} and the like resolve only inside a run
        return None
    if not path.is_file():
        return None
    key = found.group(1) if (found := re.fullmatch(r"\$\{(\w+)\}", str(raw))) else "hydra.run.dir"
    return f"{key}={path} is a file; the command writes its outputs into a folder there: give another path"


def close_key(config_name: str, plain: Sequence[str], err: Exception) -> str | None:
    """A message naming the key that ``plain`` set but the composed config lacks (Hydra's ``err``), and its
    close match; ``None`` when ``err`` is another failure."""
    from hydra import compose
    from hydra.errors import ConfigCompositionException

    found = re.search(r"Could not override '([^']+)'", str(err))
    if not found or "not in struct" not in str(err.__cause__ or err):
        return None
    key = found.group(1)
    rest = [o for o in plain if not o.startswith(f"{key}=")]
    try:
        cfg = compose(config_name=config_name, overrides=rest)
    except ConfigCompositionException:
        return None
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    keys = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
    match = difflib.get_close_matches(leaf, keys, n=1, cutoff=0.6)
    where = f"'{parent}'" if parent else "the config"
    hint = f"did you mean {parent + '.' if parent else ''}{match[0]}?" if match else f"its keys: {', '.join(keys)}"
    return f"{key}: {where} has no key '{leaf}'; {hint} (to add a new key on purpose: +{key}=...)"


def unset_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """The dotted keys whose value is ``???``, found without resolving any interpolation (``OmegaConf.missing_keys``
    resolves them, and ``${hydra:...}`` cannot be resolved before Hydra runs)."""
    found = []
    for key in node.keys():
        if OmegaConf.is_missing(node, key):
            found.append(f"{prefix}{key}")
        elif isinstance(child := node._get_node(key), DictConfig):
            found += unset_keys(child, f"{prefix}{key}.")
    return found


def check_overrides(config_name: str, prog: str, argv: Sequence[str] | None = None) -> None:
    """Exit with status 2 and a one-line reason when a command-line key does not exist or a needed value is
    missing (:func:`command_line_problem`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("--help", "-h", "--hydra-help", "--info", "--cfg", "-c") or a.startswith("--") for a in args):
        return
    message = command_line_problem(config_name, args)
    if message:
        print(f"{prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


HELP_FLAGS = ("--help", "-h", "--hydra-help")


def answer_first(config_name: str, prog: str) -> None:
    """``--help`` and a bad command line, answered before a command imports what it runs with.

    torch, Lightning and torchvision take 10-18 s to import on a 2-core machine, and a user waited through
    them for a usage line or a one-line typo message. Each command's module calls this above its heavy
    imports, under ``if __name__ == "__main__"``: only Hydra and OmegaConf are loaded by then."""
    if any(arg in HELP_FLAGS for arg in sys.argv[1:]):
        import hydra

        @hydra.main(version_base="1.3", config_path="conf", config_name=config_name)
        def show_help(cfg: DictConfig) -> None:  # Hydra prints the help and exits before calling it
            raise AssertionError("unreachable: Hydra answers --help itself")

        show_help()
    check_overrides(config_name, prog)


def in_multirun() -> bool:
    """True inside a job of ``python -m segkit.<verb> -m ...`` (a sweep)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def expected_error(err: Exception) -> Exception | None:
    """The error to report in one line, or ``None`` for a traceback: ``err`` when it is an expected kind (a
    bad path or value, pretrained weights out of reach, a trainer setting Lightning refuses), or the expected
    error that Hydra's ``instantiate`` met while building an object from the config (it raises an
    ``InstantiationException`` whose message is the cause's ``repr``, quotes escaped, and keeps the cause
    itself as ``__cause__``)."""
    from hydra.errors import InstantiationException
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    from segkit.models.weights import WeightsUnavailableError

    if isinstance(err, InstantiationException) and isinstance(err.__cause__, Exception):
        err = err.__cause__
    kinds = (*EXPECTED_ERRORS, WeightsUnavailableError, MisconfigurationException)  # Lightning's: a bad trainer.*
    return err if isinstance(err, kinds) else None


def clear_errors(run: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Wrap a command's ``run(cfg)``: an expected error (bad path, bad value) becomes one logged line and exit
    status 1, instead of a traceback; ``HYDRA_FULL_ERROR=1`` re-raises it.

    In a multirun (a sweep) the error is logged and re-raised as it is: the sweeper records the trial as
    failed and goes on with the next one, where an exit would end the whole sweep."""

    @wraps(run)
    def wrapped(cfg: DictConfig) -> Any:
        try:
            return run(cfg)
        except Exception as raised:
            err = expected_error(raised)
            if err is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            if in_multirun():
                log.error("This job failed: %s: %s", type(err).__name__, err)
                raise
            log.error("%s: %s (HYDRA_FULL_ERROR=1 shows the traceback)", type(err).__name__, err)
            raise SystemExit(1) from None

    return wrapped
