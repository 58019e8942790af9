"""Crash-safe checkpoint files and finding the checkpoint to resume from."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

log = logging.getLogger(__name__)

TMP_SUFFIX = ".tmp"


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (the directory entry itself lives in the folder's data)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # some filesystems (and Windows) cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete ``.<name>.*.tmp`` files left by a writer that was killed mid-write; returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(f".*{TMP_SUFFIX}") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
        log.info("Removed %s, a checkpoint that an interrupted writer left half-written", path)
    return stale


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file in the target folder, fsyncs it, then renames it into place.

    A crash or SIGKILL mid-write leaves the previous checkpoint intact instead of a truncated file. The file
    gets the permissions any new file would get under the process umask (``mkstemp`` alone gives 0600, which
    hides checkpoints from the rest of a group on a shared cluster), and the folder is fsynced after the rename.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        """Save ``checkpoint`` to ``path`` atomically (local paths; remote URLs use Lightning's default)."""
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
        try:
            os.fchmod(fd, 0o666 & ~_umask())
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(path.parent)


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


def newest_run_checkpoint(run_dir: str | Path) -> str | None:
    """The most recently written of ``<run_dir>/hpc_ckpt_*.ckpt`` and ``<run_dir>/checkpoints/last.ckpt``.

    A SLURM job requeued by Lightning's auto-requeue starts again in the same run directory (``SEGKIT_RUN_ID``
    = the job id): Lightning saved ``hpc_ckpt_N.ckpt`` on the requeue signal, and segkit may have saved a later
    ``last.ckpt`` on the SIGTERM that followed. Resuming from the newer one loses the least work.
    """
    run_dir = Path(run_dir)
    candidates = [*run_dir.glob("hpc_ckpt_*.ckpt"), run_dir / "checkpoints" / "last.ckpt"]
    existing = [p for p in candidates if p.is_file()]
    return str(max(existing, key=lambda p: p.stat().st_mtime)) if existing else None
