"""What the user typed against what the plan decided: every typed key wins over the planned one, and over
its planned parents, children and group contents (:func:`overriding`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from omegaconf import DictConfig, OmegaConf

from segkit.cli import for_the_app, override_key
from segkit.planning.record import GROUPS, Plan, format_value


def user_keys(overrides: Sequence[str]) -> dict[str, str]:
    """Key -> override for what the user typed, less Hydra's own (:func:`for_the_app`)."""
    return {override_key(item): item for item in overrides if not for_the_app(item)}


def overriding(plan_key: str, typed: dict[str, str]) -> str | None:
    """The user's override that takes ``plan_key`` out of the plan, if any.

    A typed value wins over the same key and over its parents' or children's planned values. A typed group
    choice (``model=unet_resnet34``) wins over the planned choice and the planned values inside that group,
    except the facts read from the data (``data.*`` and ``model.in_channels``): ``data=isbi2012`` is what
    was planned for, not a setting to keep.
    """
    for key, item in typed.items():
        key = key.replace("/", ".")  # a nested group choice (model/encoder=resnet18) sets model.encoder
        if key == plan_key:
            return item
        if "." not in key:  # a group choice
            if key != "data" and plan_key.startswith(key + ".") and plan_key != "model.in_channels":
                return item
        elif "." in plan_key and (plan_key.startswith(key + ".") or key.startswith(plan_key + ".")):
            return item
    return None


def apply_plan(
    plan: Plan, overrides: Sequence[str], compose: Callable[[list[str]], DictConfig]
) -> tuple[DictConfig, list[str]]:
    """Compose the planned config: the plan's overrides first, then the user's, dropping every planned key
    the user set (a parent or child key counts). Returns the config and one line per kept user setting."""
    user = [o for o in overrides if not for_the_app(o)]
    typed = user_keys(user)
    yours, planned = [], []
    for decision, item in zip(plan.decisions, plan.overrides(), strict=True):
        mine = overriding(decision.key, typed)
        if mine is not None:
            yours.append((mine, decision))
        else:
            planned.append(item)
    cfg = compose([*planned, *user])
    kept = []
    for mine, decision in yours:
        if decision.key not in GROUPS and composed_value(cfg, decision.key) == decision.value:
            kept.append(f"{mine} (you typed it; the plan has the same)")  # a typed fact it planned for, or a match
        else:
            kept.append(f"{mine} (you typed it; the plan had {decision.key}={format_value(decision.value)})")
    return cfg, kept


def typed_value(cfg: DictConfig, key: str, typed: dict[str, str]):
    """The composed value of ``key`` when the user typed it (or a parent or child key), else ``None``."""
    return composed_value(cfg, key) if overriding(key, typed) is not None else None


def composed_value(cfg: DictConfig, key: str):
    """The composed value at ``key`` as plain data (``None`` where the key is absent)."""
    found = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(found, resolve=True) if OmegaConf.is_config(found) else found


def typed_network(typed: dict[str, str]) -> list[str]:
    """The user's overrides that fix the network (a model group, its encoder or its width): the plan then
    times that network instead of choosing one, so that the epoch length, validation cadence and
    augmentation strength fit the network the run will train."""
    fixing = ("model", "model.encoder", "model.base_channels")
    return [item for key, item in typed.items() if key.replace("/", ".") in fixing]
