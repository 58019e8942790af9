"""What ``FolderDataset(cache=True)`` costs in start-up time and memory, per process, with loader workers.

    python benchmarks/cache_memory.py --data-dir ../shared/data            # CamVid's training split
    python benchmarks/cache_memory.py --root outputs/unseen_nuclei/train --num-classes 2 --mapping 0:0 255:1

Builds the dataset without and with the cache, reads every sample 4 times, shuffled, through a ``DataLoader`` with
``--workers`` forked workers, and prints each process's memory from ``/proc/<pid>/smaps_rollup`` (Linux):
``Pss`` (shared pages split between the processes that map them) and ``Private_Dirty`` (pages only that
process wrote). The cache is filled before the workers fork, so its pages should stay shared: the workers'
private memory should not grow by the size of the split.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from torch.utils.data import DataLoader

from segkit.data import FolderDataset

PASSES = 4


def memory_mib(pid: int) -> dict[str, int] | None:
    """``Rss``, ``Pss`` and ``Private_Dirty`` of a process in MiB; ``None`` once it has exited."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return None
    fields = {line.split(":")[0]: int(line.split()[1]) // 1024 for line in lines[1:]}
    return {k: fields[k] for k in ("Rss", "Pss", "Private_Dirty")}


def children(pid: int) -> list[int]:
    tasks = Path(f"/proc/{pid}/task")
    found = []
    for task in tasks.iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def shape_only(batch: list[dict]) -> tuple:
    return tuple(batch[0]["image"].shape)


def measure(make, workers: int) -> None:
    for cache in (False, True):
        start = time.perf_counter()
        dataset = make(cache)
        built = time.perf_counter() - start
        loader = DataLoader(
            dataset, batch_size=1, num_workers=workers, shuffle=True, persistent_workers=True, collate_fn=shape_only
        )
        for _ in range(PASSES):  # shuffled, as in training: each worker comes to read (and keep) most samples
            for _ in loader:
                pass
        rows = [("main", memory_mib(os.getpid()))]
        rows += [(f"worker {pid}", m) for pid in children(os.getpid()) if (m := memory_mib(pid))]
        print(f"cache={cache}: {len(dataset)} samples, built in {built:.1f} s", flush=True)
        for name, m in rows:
            print(f"  {name:>14}: " + ", ".join(f"{k} {v} MiB" for k, v in m.items()), flush=True)
        del loader


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("SEGKIT_DATA_DIR", "../shared/data")))
    parser.add_argument("--root", type=Path, help="a folder with images/ and masks/ (default: CamVid's train split)")
    parser.add_argument("--num-classes", type=int, help="default: CamVid's 11")
    parser.add_argument("--mapping", nargs="+", help="mask value:class pairs (default: CamVid's, 11 ignored)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.root is None:
        root, dirs = args.data_dir / "camvid", {"images_dir": "train", "masks_dir": "trainannot"}
        mapping = {**{i: i for i in range(11)}, 11: 255}
        args.num_classes = args.num_classes or 11
    else:
        root, dirs = args.root, {}
        mapping = None
    if args.mapping:
        mapping = {int(a): int(b) for a, b in (pair.split(":") for pair in args.mapping)}
    if args.num_classes is None:
        raise SystemExit("give --num-classes with --root")
    if not root.is_dir():
        raise SystemExit(f"{root} not found (set --data-dir or SEGKIT_DATA_DIR, or give --root)")
    measure(
        lambda cache: FolderDataset(root, args.num_classes, mask_mapping=mapping, cache=cache, **dirs), args.workers
    )


if __name__ == "__main__":
    main()
