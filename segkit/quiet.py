"""Silence the messages of dependencies that are noise to a segkit user, by exact message, never by category.

Lightning's hints about its paid services, and a deprecation inside Lightning that a user cannot act on, are
filtered; any other warning still shows.
"""

from __future__ import annotations

import logging
import warnings

NOISY_WARNINGS = (
    r".*isinstance\(treespec, LeafSpec\)` is deprecated",  # torch deprecation triggered inside Lightning
    r"Precision .* is not supported by the model summary",  # the summary's size estimate; training is fine
)
NOISY_LOG_PREFIXES = ("💡 Tip:",)  # Lightning's adverts for litlogger / litmodels


class _DropPrefixes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(NOISY_LOG_PREFIXES)


def silence_known_noise() -> None:
    """Install the filters (idempotent)."""
    for pattern in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(f, _DropPrefixes) for f in logger.filters):
        logger.addFilter(_DropPrefixes())
