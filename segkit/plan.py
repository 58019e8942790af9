"""Planning without training: ``python -m segkit.plan <data overrides> trainer.max_time=HH:MM:SS``.

Writes ``fingerprint.json`` and ``plan.yaml`` to the run directory and prints the decision table: the plan
``python -m segkit.train +experiment=auto`` with the same overrides would train (the probe's timings vary a
little from run to run, so widths near a threshold may differ).
"""

from __future__ import annotations

# ruff: noqa: E402 -- a command line is answered (--help, a typo) before the imports it runs with
from segkit.cli import answer_first

if __name__ == "__main__":  # ~2 s instead of the 10-18 s torch and Lightning take to import
    answer_first("plan", "segkit.plan")

import logging
import shlex
from functools import partial
from pathlib import Path

import hydra
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from segkit.cli import clear_errors
from segkit.planning.overrides import user_keys
from segkit.planning.planner import plan_run
from segkit.planning.record import Plan, save_plan

log = logging.getLogger(__name__)


def run(cfg: DictConfig, overrides: list[str] | None = None) -> Plan:
    """Plan for ``cfg`` (the training config with ``+experiment=auto``) and save the plan in its output dir."""
    plan = plan_run(cfg, typed=user_keys(overrides or []), compose=partial(compose, "plan"))
    out = Path(cfg.paths.output_dir)
    typed = shlex.join(overrides or [])  # copy-safe: a shell would expand {mode:range,low:0,high:4095}
    save_plan(plan, out, f"planned by: python -m segkit.plan {typed}")
    log.info("Train it: python -m segkit.train +experiment=auto %s", typed)
    log.info("Or keep it: copy plan.yaml to <dir>/experiment/<name>.yaml and run python -m segkit.train "
             "--config-dir <dir> +experiment=<name> %s", typed)  # fmt: skip
    return plan


@hydra.main(version_base="1.3", config_path="conf", config_name="plan")
def main(cfg: DictConfig) -> None:
    """Command-line entry (conf/plan.yaml)."""
    clear_errors(partial(run, overrides=list(HydraConfig.get().overrides.task)))(cfg)


if __name__ == "__main__":
    main()
