"""ImageFolderDataset: ``root/<class>/<image>`` classification data, every file checked up front."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from segkit.data.io import IMAGE_SUFFIXES, hidden, image_size, natural_key, read_image

log = logging.getLogger(__name__)


class ImageFolderDataset(Dataset):
    """Images in one sub-folder per class; the class names are the folder names (sorted).

    A file that is not a readable image is an error naming the file, unless ``skip_invalid`` is set (then
    it is skipped with a warning). Hidden files (``.DS_Store``...) are ignored.

    Returns ``{"image": ..., "label": int64 scalar, "name": relative path}``.

    Args:
        root: folder holding one sub-folder per class.
        class_names: expected classes (folder names); default: every sub-folder.
        color_mode: ``"rgb"`` (palette and grey images are converted) or ``"gray"``.
        skip_invalid: skip unreadable or non-image files with a warning instead of raising.
        transform: albumentations-style callable ``transform(image=...) -> dict``.
    """

    def __init__(
        self,
        root: str | Path,
        class_names: Sequence[str] | None = None,
        color_mode: str = "rgb",
        skip_invalid: bool = False,
        transform: Callable[..., dict] | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {self.root} (check paths.data_dir)")
        found = sorted((d.name for d in self.root.iterdir() if d.is_dir() and not hidden(d)), key=natural_key)
        if class_names is None:
            class_names = found
        missing = [c for c in class_names if c not in found]
        if missing or not class_names:
            raise ValueError(f"{self.root} has class folders {found}; expected {list(class_names)}")
        self.class_names = list(class_names)
        self.color_mode = color_mode
        self.transform = transform
        self.samples: list[tuple[Path, int]] = []
        for label, name in enumerate(self.class_names):
            for path in sorted((self.root / name).iterdir(), key=lambda p: natural_key(p.name)):
                if hidden(path) or not path.is_file():
                    continue
                problem = _check_image(path)
                if problem is None:
                    self.samples.append((path, label))
                elif skip_invalid:
                    log.warning("Skipping %s: %s", path, problem)  # a log line, not a warning pointing into Hydra
                else:
                    raise ValueError(
                        f"{path}: {problem} (remove it, or skip such files with skip_invalid=true: on the command "
                        "line data.train_dataset.skip_invalid=true, data.val_dataset.skip_invalid=true)"
                    )
        if not self.samples:
            raise ValueError(f"no images found under {self.root}")

    @property
    def labels(self) -> list[int]:
        """The label of every sample, in order."""
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | str]:
        path, label = self.samples[index]
        image = read_image(path, self.color_mode)
        if self.transform is not None:
            image = self.transform(image=image)["image"]
        return {"image": torch.as_tensor(image), "label": torch.tensor(label), "name": str(path.relative_to(self.root))}


def _check_image(path: Path) -> str | None:
    """Why ``path`` is not a usable image, or ``None`` when it is."""
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return f"not an image file (suffix {path.suffix or 'none'}; expected one of {', '.join(IMAGE_SUFFIXES)})"
    try:
        image_size(path)
    except ValueError as err:
        return str(err)
    return None
