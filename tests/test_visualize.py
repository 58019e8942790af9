"""Pictures: importing segkit leaves matplotlib's backend alone (a notebook keeps its inline backend)."""

from __future__ import annotations

import numpy as np
from PIL import Image


def test_importing_segkit_does_not_switch_the_matplotlib_backend(fresh_imports: dict) -> None:
    assert fresh_imports["backend"] == "svg"  # set before segkit.visualize, callbacks, train and tasks


def test_prediction_grid_is_written_without_pyplot(tmp_path) -> None:
    from segkit.visualize import save_prediction_grid

    image = np.zeros((16, 24, 3), dtype=np.float32)
    mask = np.zeros((16, 24), dtype=np.int64)
    mask[4:8, 4:8] = 1
    path = save_prediction_grid([image], [mask], [mask], tmp_path / "grid.png", num_classes=2)
    assert Image.open(path).size[0] > 100
