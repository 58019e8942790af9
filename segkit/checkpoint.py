"""Crash-safe checkpoint files and finding the checkpoint to resume from."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the target folder, fsyncs it, then renames it into place.

    A crash or SIGKILL mid-write leaves the previous checkpoint intact instead of a truncated file.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        """Save ``checkpoint`` to ``path`` atomically (local paths; remote URLs use Lightning's default)."""
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def resolve_resume_path(ckpt_path: str | None, checkpoint_dir: str | Path) -> str | None:
    """Turn the user's ``ckpt_path`` into a file to resume from.

    ``None`` -> no resume; ``"last"`` -> ``<checkpoint_dir>/last.ckpt``; a run directory ->
    ``<run_dir>/checkpoints/last.ckpt``; a file -> itself. Raises ``FileNotFoundError`` naming what was tried.
    """
    if ckpt_path is None:
        return None
    if ckpt_path == "last":
        candidate = Path(checkpoint_dir) / "last.ckpt"
    else:
        candidate = Path(ckpt_path)
        if candidate.is_dir():
            candidate = (
                candidate / "checkpoints" / "last.ckpt"
                if (candidate / "checkpoints").is_dir()
                else candidate / "last.ckpt"
            )
    if not candidate.is_file():
        raise FileNotFoundError(f"ckpt_path={ckpt_path!r}: no checkpoint file at {candidate}")
    return str(candidate)
