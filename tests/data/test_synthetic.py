"""SyntheticShapes: deterministic, multi-class, any size, not solvable by colour."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from segkit.data import SyntheticShapes


def test_same_seed_same_samples_and_different_seed_differs() -> None:
    a, b = SyntheticShapes(4, seed=3), SyntheticShapes(4, seed=3, cache=False)
    for i in range(4):
        np.testing.assert_array_equal(a.render(i)[0], b.render(i)[0])
    assert not np.array_equal(a.render(0)[0], SyntheticShapes(4, seed=4).render(0)[0])


@pytest.mark.parametrize("size", [(64, 64), (48, 100)])
def test_any_size_and_all_classes_appear(size: tuple[int, int]) -> None:
    ds = SyntheticShapes(64, image_size=size)
    item = ds[0]
    assert item["image"].shape == (*size, 3) and item["mask"].shape == size
    labels = set()
    for i in range(len(ds)):
        labels |= set(np.unique(ds.render(i)[1]).tolist())
    assert labels == {0, 1, 2, 3}


def test_class_colour_is_not_constant() -> None:
    """Mean colour of one class varies a lot across images, so colour cannot identify the class."""
    ds = SyntheticShapes(64)
    means = []
    for i in range(len(ds)):
        image, mask = ds.render(i)
        if (mask == 1).sum() > 20:
            means.append(image[mask == 1].mean(axis=0))
    assert np.std(np.array(means), axis=0).min() > 30


def test_folder_command_writes_pairs_without_warnings(tmp_path) -> None:
    """The README's ``python -m segkit.data.synthetic`` runs clean (it once warned that runpy found the module
    already imported by the package)."""
    out = subprocess.run(
        [sys.executable, "-W", "error::RuntimeWarning", "-m", "segkit.data.synthetic", str(tmp_path / "f")]
        + ["--train", "2", "--val", "1", "--size", "32"],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert "RuntimeWarning" not in out.stderr
    assert len(list((tmp_path / "f" / "train" / "images").glob("*.png"))) == 2
    assert len(list((tmp_path / "f" / "val" / "masks").glob("*.png"))) == 1


def test_the_synthetic_command_leaves_the_training_stack_unimported() -> None:
    """``python -m segkit.data.synthetic``, the README's first command, once imported the datamodules, models and
    metrics with the packages (Lightning, albumentations, timm, torchmetrics): 5 s before it drew a shape. The
    package names still resolve, on first use."""
    heavy = ("pytorch_lightning", "albumentations", "timm", "torchmetrics")
    code = f"import sys, segkit.data.synthetic; print([m for m in {heavy!r} if m in sys.modules])"
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert found.stdout.strip() == "[]"
    import segkit
    import segkit.data

    assert all(getattr(segkit.data, name).__name__ == name for name in segkit.data.__all__)
    assert segkit.load_model.__name__ == "load_model" and segkit.LoadedModel.__name__ == "LoadedModel"
    with pytest.raises(AttributeError, match="no attribute 'Nothing'"):
        segkit.data.Nothing  # noqa: B018
