"""Checkpoint files: atomic, readable by the group under the umask, no stale temporaries left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import torch

from segkit.checkpoint import AtomicCheckpointIO, remove_stale_temporaries


def test_checkpoint_permissions_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o002)  # a shared-cluster umask: group may read and write
    try:
        AtomicCheckpointIO().save_checkpoint({"step": torch.tensor(3)}, tmp_path / "ckpt" / "last.ckpt")
    finally:
        os.umask(old)
    path = tmp_path / "ckpt" / "last.ckpt"
    assert stat.S_IMODE(path.stat().st_mode) == 0o664
    assert torch.load(path, weights_only=True)["step"] == 3
    assert os.listdir(path.parent) == ["last.ckpt"]


def test_stale_temporaries_of_a_killed_writer_are_removed(tmp_path: Path) -> None:
    (tmp_path / ".last.ckpt.abc123.tmp").write_bytes(b"half a checkpoint")
    (tmp_path / "epoch_003.ckpt").write_bytes(b"kept")
    removed = remove_stale_temporaries(tmp_path)
    assert [p.name for p in removed] == [".last.ckpt.abc123.tmp"]
    assert sorted(os.listdir(tmp_path)) == ["epoch_003.ckpt"]
    assert remove_stale_temporaries(tmp_path / "missing") == []
