"""The files around prediction: which inputs, where outputs go and under which names, palette PNGs, and
progress over files."""

from __future__ import annotations

import glob
import io
import logging
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from segkit.data.io import hidden

log = logging.getLogger(__name__)


def list_inputs(spec: str) -> list[Path]:
    """An image file, a folder (its files but hidden ones: ``.DS_Store``, a Mac's ``._a.png``; not recursive)
    or a glob pattern -> sorted files."""
    path = Path(spec)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not hidden(p))
    elif path.is_file():
        files = [path]
    else:
        files = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
    if not files:
        raise FileNotFoundError(f"input={spec!r} matches no file")
    return files


def check_output_dir(output: Path, inputs: list[Path]) -> None:
    """Refuse an output folder that holds any input (written masks would replace or mix with the images)."""
    output = output.resolve()
    clashes = [p for p in inputs if p.resolve().parent == output]
    if clashes:
        raise ValueError(
            f"output={output} is the folder of the input images (e.g. {clashes[0].name}); "
            "choose another output folder so no input is overwritten"
        )


def output_stems(inputs: list[Path]) -> dict[Path, str]:
    """The name each input's outputs get: its stem, or ``<stem>_<suffix>`` where two inputs share a stem
    (``a.png`` and ``a.tif`` -> ``a_png``, ``a_tif``), so no output silently replaces another."""
    counts: dict[str, int] = {}
    for path in inputs:
        counts[path.stem] = counts.get(path.stem, 0) + 1
    stems = {p: p.stem if counts[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}" for p in inputs}
    if len(set(stems.values())) != len(inputs):  # a.png beside a.PNG, or a_png.png beside a.png and a.tif
        stems = {p: f"{i:05d}_{p.stem}" for i, p in enumerate(inputs)}
    for path in inputs:
        if stems[path] != path.stem:
            log.info("%s shares its stem with another input: its outputs are named %s*", path, stems[path])
    return stems


def png_bytes(array: np.ndarray, palette: list[list[int]] | None = None) -> bytes:
    """``(H, W)`` class indices as a palette PNG (with ``palette``: viewers show the class colours), or
    ``(H, W, 3)`` uint8 as an RGB PNG."""
    image = Image.fromarray(array.astype(np.uint8), mode="P" if palette is not None else "RGB")
    if palette is not None:
        flat = [c for rgb in palette for c in rgb]
        image.putpalette(flat + [0] * (768 - len(flat)))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def save_index_png(mask: np.ndarray, palette: list[list[int]], path: Path) -> None:
    """A palette PNG: pixel values are class indices, viewers show the class colours."""
    Path(path).write_bytes(png_bytes(mask, palette))


class FileProgress:
    """Progress over files: a rich bar in a terminal, else a log line at most every ``every_seconds``."""

    def __init__(self, total: int, every_seconds: float = 10.0) -> None:
        self.total, self.every_seconds = total, every_seconds
        self.start = self.last = time.monotonic()
        self.bar = None
        if sys.stdout.isatty():
            from rich.progress import Progress

            self.bar = Progress()
            self.bar.start()
            self.task = self.bar.add_task("predicting", total=total)

    def update(self, done: int, name: str) -> None:
        """Report that ``done`` files are finished, the last one ``name``."""
        if self.bar is not None:
            self.bar.update(self.task, completed=done)
            return
        now = time.monotonic()
        if now - self.last >= self.every_seconds or done in (1, self.total):
            self.last = now
            rate = done / (now - self.start)
            eta = (self.total - done) / rate if rate > 0 else 0.0
            log.info("[%d/%d] %s | %.2f images/s | ETA %.0f s", done, self.total, name, rate, eta)

    def close(self) -> None:
        """Stop the bar."""
        if self.bar is not None:
            self.bar.stop()
