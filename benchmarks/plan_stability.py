"""How steady is the plan? ``python -m segkit.plan`` run N times in fresh processes on the same data and budget.

    python benchmarks/plan_stability.py --repeats 5 -- data=isbi2012 paths.data_dir=../shared/data \
        trainer.max_time=00:00:10:00

The width rule takes the widest network whose probed step time still gives the step and pixel floors in the
budget. The probe is a few steps at one moment, and a 2-core machine's speed moves within minutes, so a width
that clears a floor by a few percent is taken at one moment and not at the next. This prints, for each
repeat, the probed step time of every width, the network and precision taken and the steps promised, then
how often each was taken. Nothing trains; run it alone (no other torch process), as every timing here.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def plan_once(overrides: list[str], run_dir: Path) -> dict:
    """One ``segkit.plan`` in a fresh process: the network it took, the steps it promised, the probe's times."""
    command = [sys.executable, "-m", "segkit.plan", *overrides, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    record = json.loads((run_dir / "fingerprint.json").read_text())
    decisions = {key: value for key, value, _ in record["decisions"]}
    encoder = decisions.get("model.encoder", "unet")
    network = encoder if encoder != "unet" else f"unet-{decisions['model.base_channels']}"
    network += f" {decisions['trainer.precision']}"
    probe = record["probe"]
    return {
        "network": network,
        "planned_steps": probe["planned_steps"],
        "step_ms": {w: round(1000 * s) for w, s in probe["step_seconds"].items()},
        "planning_seconds": record["planning_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("overrides", nargs="+", help="segkit.plan overrides (after --): data and budget")
    args = parser.parse_args()
    root = Path("outputs") / "plan_stability" / time.strftime("%Y-%m-%d_%H-%M-%S")
    taken = collections.Counter()
    for i in range(args.repeats):
        row = plan_once(args.overrides, root / str(i))
        taken[row["network"]] += 1
        times = ", ".join(f"{w}: {ms} ms" for w, ms in row["step_ms"].items())
        print(f"[{i + 1}/{args.repeats}] {time.strftime('%H:%M:%S')} probe {times} -> {row['network']}, "
              f"~{row['planned_steps']} steps (planned in {row['planning_seconds']} s)", flush=True)  # fmt: skip
    print("taken: " + ", ".join(f"{net} {n}/{args.repeats}" for net, n in taken.most_common()), flush=True)


if __name__ == "__main__":
    main()
