"""bf16 only where the CPU runs it fast: the cpu preset, predictions and the planner (segkit/precision.py)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
import torch

import segkit.precision
from segkit.inference.predictor import inference_precision


@pytest.fixture
def cpu_bf16(monkeypatch):
    """Set whether this CPU has oneDNN bf16 kernels; the cached precision is cleared around the test."""

    def set_to(fast: bool) -> None:
        monkeypatch.setattr(segkit.precision, "cpu_has_fast_bf16", lambda: fast)
        segkit.precision.cpu_precision.cache_clear()

    yield set_to
    segkit.precision.cpu_precision.cache_clear()


def test_the_cpu_preset_trains_in_bf16_only_where_the_cpu_has_bf16_kernels(compose_cfg, cpu_bf16, caplog) -> None:
    """On an AVX2-only CPU a unet_small step took 1545 ms in bf16 against 183 ms in fp32 (the quickstart 8x
    slower): trainer=cpu resolves to fp32 there and says so once; a typed precision still wins."""
    cpu_bf16(True)
    assert compose_cfg("trainer=cpu").trainer.precision == "bf16-mixed"
    cpu_bf16(False)
    with caplog.at_level(logging.INFO, logger="segkit.precision"):
        cfg = compose_cfg("trainer=cpu")
        assert [cfg.trainer.precision for _ in range(2)] == ["32-true", "32-true"]  # read twice, said once
    assert [r.getMessage() for r in caplog.records].count(
        f"Training in fp32: {segkit.precision.NO_FAST_BF16} (trainer.precision=bf16-mixed forces it)"
    ) == 1
    assert compose_cfg("trainer=cpu", "trainer.precision=bf16-mixed").trainer.precision == "bf16-mixed"
    assert compose_cfg("trainer=cpu", "precision=bf16").trainer.precision == "bf16-mixed"


def test_a_typed_16_bit_precision_on_a_cpu_without_bf16_kernels_is_warned_about(cpu_bf16, caplog) -> None:
    """``trainer.precision=16-mixed`` on the CPU: Lightning ran it as bf16-mixed with one line of its own,
    and the quickstart trained at 0.28 it/s instead of ~2.7 on the AVX2-only CPU, without a word from segkit."""
    warn = segkit.precision.warn_slow_cpu_precision
    cpu_bf16(False)
    with caplog.at_level(logging.WARNING, logger="segkit.precision"):
        assert warn("cpu", "16-mixed") and warn("cpu", "bf16-mixed") and warn("cpu", 16)
    assert "trainer.precision=16-mixed on the CPU runs as bf16" in caplog.text and "32-true" in caplog.text
    assert not warn("cpu", "32-true") and not warn("cpu", "32") and not warn("gpu", "16-mixed")
    cpu_bf16(True)
    assert not warn("cpu", "bf16-mixed")  # fast there


def test_a_bf16_model_predicts_in_fp32_on_a_cpu_without_bf16_kernels(cpu_bf16, monkeypatch) -> None:
    monkeypatch.setattr("segkit.inference.predictor.cpu_has_fast_bf16", lambda: False)
    cpu = torch.device("cpu")
    precision, why = inference_precision(None, "bf16", cpu)
    assert precision == "fp32" and "no oneDNN bf16 kernels" in why and "precision=bf16 forces it" in why
    assert inference_precision("bf16", "bf16", cpu) == ("bf16", "as given")
    assert inference_precision(None, "fp32", cpu) == ("fp32", "as the model was trained")
    assert inference_precision(None, "bf16", torch.device("cuda")) == ("bf16", "as the model was trained")
    monkeypatch.setattr("segkit.inference.predictor.cpu_has_fast_bf16", lambda: True)
    assert inference_precision(None, "bf16", cpu) == ("bf16", "as the model was trained")


def test_a_cpu_whose_onednn_stops_at_avx2_is_read_as_having_no_bf16_kernels() -> None:
    """No mock: oneDNN capped at AVX2 (``ONEDNN_MAX_CPU_ISA``, how an AVX-512 machine runs as an AVX2-only one,
    where bf16 ran 50x slower than fp32) must make the cpu preset train in fp32. A check of the CPU's flags
    (``torch.backends.cpu.get_cpu_capability()``) would still say AVX-512 here and pick bf16."""
    probe = "from segkit.precision import cpu_has_fast_bf16, cpu_precision; print(cpu_has_fast_bf16(), cpu_precision())"
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "32-true"]
