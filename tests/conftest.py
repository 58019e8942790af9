"""Shared fixtures: composed configs and small image/mask folders written to tmp_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations otherwise calls the network at import
os.environ.setdefault("SEGKIT_CACHE_DIR", tempfile.mkdtemp(prefix="segkit-cache-"))  # fingerprints of test data

from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402
from omegaconf import DictConfig, open_dict  # noqa: E402
from PIL import Image  # noqa: E402

from segkit.train import compose_config  # noqa: E402

SHARED_DATA = Path(os.environ.get("SEGKIT_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def require_shared(path: Path | str) -> Path:
    """``path`` under the shared data folder, or skip with the reason; in CI (``CI=true``, where ../shared is
    always laid out) a missing folder fails instead, so the data-dependent tests really run there."""
    path = Path(path)
    if not path.is_dir():
        reason = f"{path} not found (set SEGKIT_DATA_DIR to the shared data folder)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI=true but {reason}")
        pytest.skip(reason)
    return path


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose ``conf/train.yaml`` with overrides, writing into ``tmp_path`` and running on CPU."""

    def _compose(*overrides: str) -> DictConfig:
        cfg = compose_config([f"paths.data_dir={SHARED_DATA}", *overrides], output_dir=tmp_path / "run")
        with open_dict(cfg):
            cfg.trainer.accelerator = "cpu"
            cfg.data.num_workers = 0
        return cfg

    return _compose


def compose_command(verb: str, *overrides: str) -> DictConfig:
    """The config ``python -m segkit.<verb> OVERRIDES`` runs (``conf/<verb>.yaml``), composed in-process."""
    with initialize_config_module(config_module="segkit.conf", version_base="1.3"):
        return compose(config_name=verb, overrides=list(overrides))


def write_pairs(root: Path, n: int = 4, size: tuple[int, int] = (32, 48), values: tuple[int, ...] = (0, 1, 2)) -> Path:
    """Write ``n`` RGB PNG images and index-mask PNGs under ``root/images`` and ``root/masks``."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
        mask = rng.choice(np.array(values, dtype=np.uint8), size=size)
        Image.fromarray(image).save(root / "images" / f"{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i}.png")
    return root


def write_class_folders(root: Path, classes=("ants", "bees"), n: int = 3) -> Path:
    """Class folders of random JPEGs (and one palette GIF in the first class): the ImageFolder layout."""
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(root / name / f"{i}.jpg")
    Image.fromarray(rng.integers(0, 256, (30, 30), dtype=np.uint8)).convert("P").save(root / classes[0] / "x.gif")
    return root


@pytest.fixture
def synthetic_dir(tmp_path: Path) -> Path:
    """A ``train/`` and ``val/`` folder of 3-class image/mask pairs (the data/folder.yaml layout)."""
    write_pairs(tmp_path / "data" / "train", n=6)
    write_pairs(tmp_path / "data" / "val", n=3)
    return tmp_path / "data"


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A short quickstart run (2 epochs of 64 images, 48x48 patches), shared by the predict, eval and export tests."""
    from segkit.train import train

    root = tmp_path_factory.mktemp("predict")
    cfg = compose_config([
        "+experiment=quickstart", "trainer.max_epochs=2", "data.train_dataset.num_samples=64",
        "data.val_dataset.num_samples=4", "data.batch_size=4", "callbacks.rich_progress_bar=null",
        "trainer.accelerator=cpu", "data.patch_size=[48,48]",
    ], output_dir=root / "run")  # fmt: skip
    train(cfg)
    return root / "run"


# What a fresh interpreter has done once segkit's modules are imported: the network calls it tried
# (albumentations asks PyPI for its version at import unless NO_ALBUMENTATIONS_UPDATE is set) and the
# matplotlib backend it left (a notebook's inline backend must survive). One child serves both tests.
FRESH_IMPORT_SCRIPT = """
import json, urllib.request
calls = []
def offline(self, url, *args, **kwargs):
    calls.append(getattr(url, "full_url", url))
    raise OSError("offline")
urllib.request.OpenerDirector.open = offline
import matplotlib
matplotlib.use("svg")
import segkit, albumentations
import segkit.visualize, segkit.callbacks, segkit.train, segkit.tasks
print(json.dumps({"calls": calls, "backend": matplotlib.get_backend()}))
"""


@pytest.fixture(scope="session")
def fresh_imports(tmp_path_factory) -> dict:
    """``FRESH_IMPORT_SCRIPT``'s findings, in a child without ``NO_ALBUMENTATIONS_UPDATE``."""
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    done = subprocess.run([sys.executable, "-c", FRESH_IMPORT_SCRIPT], cwd=tmp_path_factory.mktemp("imports"),
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def evaluated_run(trained_run: Path, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """``python -m segkit.eval`` of ``trained_run`` with no data overrides, the report and the predictions on:
    one command run (each costs ~12 s of torch and Lightning import), read by the eval, report and browser
    tests. Returns the finished process and the output folder."""
    out = tmp_path_factory.mktemp("evaluated") / "eval"
    command = [sys.executable, "-m", "segkit.eval", f"ckpt={trained_run}", f"output={out}", "tile=[64,64]",
               "report=true", "save_predictions=true"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done, out
