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

import numpy as np
import torch


def parse_args(
    doc: str, peer_minutes: int, ours_minutes: list[int] | None, dataset: str, extra: Callable | None = None
) -> tuple[argparse.Namespace, Path]:
    """``--minutes``, ``--data-dir``, trailing segkit overrides, whatever ``extra(parser)`` adds and, for a
    comparison with a peer (``ours_minutes`` given), ``--ours-minutes`` and ``--skip-peer``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if extra is not None:
        extra(parser)
    peer = ours_minutes is not None
    parser.add_argument("--minutes", type=float, default=peer_minutes,
                        help="the peer's training budget" if peer else "the training budget")  # fmt: skip
    if peer:
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


def run_experiment(
    experiment: str | None, data_dir: Path, minutes: float, overrides: list[str], name: str | None = None
) -> tuple[dict, int, Path]:
    """``python -m segkit.train +experiment=NAME trainer.max_time=...`` (no experiment: the plain defaults): its
    metrics.json, steps and run folder (``outputs/benchmark_<name or experiment>/...``)."""
    name = name or experiment or "defaults"
    run_dir = Path("outputs") / f"benchmark_{name}" / f"segkit_{minutes:g}min_{time.strftime('%Y-%m-%d_%H-%M-%S')}"
    mins, secs = divmod(round(minutes * 60), 60)
    hours, mins = divmod(mins, 60)
    command = [
        sys.executable, "-m", "segkit.train", *([f"+experiment={experiment}"] if experiment else []),
        f"paths.data_dir={data_dir}",
        f"trainer.max_time=00:{hours:02d}:{mins:02d}:{secs:02d}", f"hydra.run.dir={run_dir}", *overrides,
    ]  # fmt: skip
    print("  " + " ".join(command[1:]), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return json.loads((run_dir / "metrics.json").read_text()), int(state["global_step"]), run_dir


def seeds_in_turn(
    seeds: list[int], sides: dict[str, Callable[[int], dict]], format_row: Callable[[str, dict], str]
) -> tuple[list[str], dict[str, list[dict]]]:
    """Run every side for each seed in turn, one after the other, printing each row as soon as it is known (a
    failure in a later run loses nothing). Returns the rows and ``{side: [result per seed]}``."""
    rows: list[str] = []
    results: dict[str, list[dict]] = {}
    for seed in seeds:
        for name, run in sides.items():
            print(f"{name}, seed {seed}", flush=True)
            result = run(seed)
            results.setdefault(name, []).append(result)
            rows.append(format_row(f"{name}, seed {seed}", result))
            print("  " + rows[-1], flush=True)
    return rows, results


def mean_std(values: list[float], digits: int = 4) -> str:
    """``mean ± sample standard deviation`` (± 0 for a single value)."""
    array = np.asarray(values, dtype=float)
    spread = array.std(ddof=1) if len(array) > 1 else 0.0
    return f"{array.mean():.{digits}f} ± {spread:.{digits}f}"


def print_means(title: str, results: dict[str, list[dict]], keys: tuple[str, ...]) -> None:
    """One line per side: mean steps, then ``mean ± std`` over seeds of each of ``keys``."""
    print(f"\n{title:40} {'steps':>6} " + " ".join(f"{k:>20}" for k in keys))
    for name, rows in results.items():
        cells = " ".join(f"{mean_std([r[k] for r in rows]):>20}" for k in keys)
        print(f"{name:40} {np.mean([r['steps'] for r in rows]):>6.0f} {cells}")


def train_peer_for(
    net: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    seconds: float,
    next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    loss_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    bf16: bool = True,
) -> int:
    """The hand-written peers' loop: optimizer steps for ``seconds`` of wall time, the optimizer's starting rate
    decayed as poly (power 0.9) over that time, bf16 autocast and channels-last inputs when ``bf16``. Returns
    the steps taken; a line every 50 steps shows progress."""
    rates = [group["lr"] for group in optimizer.param_groups]
    start, steps = time.monotonic(), 0
    while (elapsed := time.monotonic() - start) < seconds:
        for group, rate in zip(optimizer.param_groups, rates, strict=True):
            group["lr"] = rate * (1 - elapsed / seconds) ** 0.9
        x, y = next_batch()
        if bf16:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = net(x).float()
        loss = loss_of(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
        if steps % 50 == 0:
            print(f"  peer step {steps}, {elapsed / 60:.1f} min, loss {loss.item():.3f}", flush=True)
    return steps


def eval_last(run_dir: Path) -> Path:
    """``python -m segkit.eval`` of the run's ``last.ckpt`` (its final weights) with the command's defaults, on
    the validation split; returns the folder holding ``eval.json`` and ``per_image.csv``."""
    output = run_dir / "eval_last"
    command = [sys.executable, "-m", "segkit.eval", f"ckpt={run_dir / 'checkpoints' / 'last.ckpt'}",
               "split=val", f"output={output}"]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    return output
