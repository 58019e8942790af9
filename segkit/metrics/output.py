"""Final numbers for people and scripts: a strict JSON file and a table on the console."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def strict_json(value: Any) -> Any:
    """``value`` with every NaN or infinity replaced by ``None`` (JSON ``null``): an undefined score (a class
    in neither target nor prediction) stays visible as missing, and every JSON parser can read the file."""
    if isinstance(value, dict):
        return {k: strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(metrics: dict[str, Any], path: Path, title: str) -> None:
    """Write ``metrics`` to ``path`` as sorted strict JSON and print the numbers as a table titled ``title``.

    Non-numeric entries (``"weights"``: which weights each group of figures comes from) go to the file and
    under the table.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(strict_json(metrics), indent=2, sort_keys=True, allow_nan=False) + "\n")
    table = Table(title=title)
    table.add_column("metric", overflow="fold")
    table.add_column("value", justify="right")
    for name, value in sorted(metrics.items()):
        if isinstance(value, int | float):
            table.add_row(name, "undefined" if not math.isfinite(value) else f"{value:.4f}")
    console = print_written_table(table, path)
    for prefix, source in sorted((metrics.get("weights") or {}).items()):
        console.print(f"{prefix}* from {source}", soft_wrap=True)


def print_written_table(table: Table, path: Path) -> Console:
    """Print ``table`` at least 100 columns wide, then where its numbers were written, on one line.

    The path is not the table's caption: a caption wraps at the table's width, and a path broken across
    lines in a log cannot be copied.
    """
    console = Console(width=max(100, Console().width))
    console.print(table)
    console.print(f"written to {path}", soft_wrap=True, highlight=False)
    return console
