"""PolyLR decays over whichever budget ends first, steps or wall time, and survives a resume."""

from __future__ import annotations

import math

import pytest
import torch

from segkit.schedulers import CosineLR, PolyLR


def make(**kwargs) -> PolyLR:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return PolyLR(optimizer, **kwargs)


def test_decay_over_steps_by_hand() -> None:
    scheduler = make(total_steps=10, power=1.0)
    lrs = []
    for _ in range(10):
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([1.0 - i / 10 for i in range(10)])
    assert scheduler.get_last_lr()[0] == 0.0


def test_time_budget_wins_when_it_ends_first(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("segkit.schedulers.time.monotonic", lambda: clock[0])
    scheduler = make(total_steps=1000, max_seconds=60.0, power=2.0)
    clock[0] += 30.0  # half the time, 1 step of 1000
    scheduler.optimizer.step()
    scheduler.step()
    assert scheduler.get_last_lr()[0] == pytest.approx(0.25)  # (1 - 0.5) ** 2
    state = scheduler.state_dict()
    resumed = make(total_steps=1000, max_seconds=60.0, power=2.0)
    resumed.load_state_dict(state)  # a resumed run keeps the 30 s already spent
    clock[0] += 15.0
    assert resumed.progress() == pytest.approx(0.75)


def test_warmup_and_floor() -> None:
    scheduler = make(total_steps=100, warmup_steps=4, min_lr_ratio=0.1, power=1.0)
    assert scheduler.get_last_lr()[0] == pytest.approx(0.1 + 0.9 * 1.0 * 0.25)
    with pytest.raises(ValueError, match="budget"):
        make()


def test_cosine_over_the_budget_by_hand() -> None:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = CosineLR(optimizer, total_steps=4)
    lrs = []
    for _ in range(5):
        lrs.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([2.0 * 0.5 * (1 + math.cos(math.pi * i / 4)) for i in range(4)] + [0.0])


def test_the_default_schedule_anneals_a_time_budgeted_run(compose_cfg) -> None:
    """trainer.max_time with a large max_epochs: the default schedule decays over the clock, not the epochs."""
    from hydra.utils import instantiate

    cfg = compose_cfg("trainer.max_time=00:00:10:00", "trainer.max_epochs=100000")
    assert cfg.task.scheduler._target_ == "segkit.schedulers.CosineLR" and cfg.task.scheduler_interval == "step"
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = instantiate(cfg.task.scheduler)(optimizer=optimizer, total_steps=None, max_seconds=600.0)
    scheduler.elapsed_before = 540.0  # 9 of the 10 minutes gone
    optimizer.step()
    scheduler.step()
    assert scheduler.get_last_lr()[0] < 0.03  # (1 + cos(0.9 pi)) / 2 = 0.024
