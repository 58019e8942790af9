"""What the wall-time benchmarks against a peer share: the command line, and segkit's run through its CLI."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


def parse_args(
    doc: str, peer_minutes: int, ours_minutes: list[int], dataset: str, extra: Callable | None = None
) -> tuple[argparse.Namespace, Path]:
    """``--minutes``, ``--ours-minutes``, ``--skip-peer``, ``--data-dir``, trailing segkit overrides, and
    whatever ``extra(parser)`` adds."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if extra is not None:
        extra(parser)
    parser.add_argument("--minutes", type=float, default=peer_minutes, help="the peer's training budget")
    parser.add_argument("--ours-minutes", type=float, nargs="*", default=ours_minutes,
                        help="segkit's budgets, in turn")  # fmt: skip
    parser.add_argument("--skip-peer", action="store_true")
    parser.add_argument("--data-dir", default=os.environ.get("SEGKIT_DATA_DIR", "../shared/data"))
    parser.add_argument("overrides", nargs="*", help="extra segkit overrides (after --)")
    args = parser.parse_args()
    data_dir = Path(args.data_dir).resolve()
    if not (data_dir / dataset).is_dir():
        raise SystemExit(f"{data_dir / dataset} not found: pass --data-dir or set SEGKIT_DATA_DIR")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    return args, data_dir


def run_experiment(experiment: str, data_dir: Path, minutes: float, overrides: list[str]) -> tuple[dict, int, Path]:
    """``python -m segkit.train +experiment=NAME trainer.max_time=...``: its metrics.json, steps and run folder."""
    run_dir = (
        Path("outputs") / f"benchmark_{experiment}" / f"segkit_{minutes:g}min_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    )
    mins, secs = divmod(round(minutes * 60), 60)
    hours, mins = divmod(mins, 60)
    command = [
        sys.executable, "-m", "segkit.train", f"+experiment={experiment}", f"paths.data_dir={data_dir}",
        f"trainer.max_time=00:{hours:02d}:{mins:02d}:{secs:02d}", f"hydra.run.dir={run_dir}", *overrides,
    ]  # fmt: skip
    print("  " + " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return json.loads((run_dir / "metrics.json").read_text()), int(state["global_step"]), run_dir
