"""Final numbers for people and scripts: a JSON file and a table on the console."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table


def write_metrics(metrics: dict[str, float], path: Path, title: str) -> None:
    """Write ``metrics`` to ``path`` as sorted JSON and print them as a two-column table titled ``title``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    table = Table(title=f"{title} ({path})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in sorted(metrics.items()):
        table.add_row(name, f"{value:.4f}")
    Console().print(table)
