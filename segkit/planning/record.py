"""A plan as people and Hydra read it: the decision table, ``plan.yaml`` (an experiment file) and
``fingerprint.json`` (the data's fingerprint, the probe's timings and the decisions, from which the other
ranks of a DDP run and the later jobs of a multirun read the plan back)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from segkit.planning.decisions import Decision

log = logging.getLogger(__name__)

GROUPS = ("aug", "loss", "model", "scheduler", "trainer")  # keys that choose a config file, not a value
VALUE_COLUMN = 28  # the table's value column; longer values (a percentile scaling) take a line of their own


@dataclass
class Plan:
    """The decisions (in order), the fingerprint they came from, and what the probe measured."""

    decisions: list[Decision]
    fingerprint: dict
    probe: dict = field(default_factory=dict)
    seconds: float = 0.0

    def overrides(self) -> list[str]:
        """Hydra overrides: ``aug=em`` for groups, ``++data.patch_size=[256,256]`` for values."""
        return [override(d.key, d.value) for d in self.decisions]

    def table(self) -> str:
        """Every decision with its value and reason, for people."""
        width = max(len(d.key) for d in self.decisions)
        values = [format_value(d.value) for d in self.decisions]
        value_width = min(VALUE_COLUMN, max(len(v) for v in values))
        lines = [f"{'setting'.ljust(width)}  {'value'.ljust(value_width)}  reason"]
        for d, value in zip(self.decisions, values, strict=True):
            if len(value) > value_width:  # a long value gets its own line; the reasons stay in one column
                lines += [f"{d.key.ljust(width)}  {value}", f"{''.ljust(width + value_width + 2)}  {d.reason}"]
            else:
                lines.append(f"{d.key.ljust(width)}  {value.ljust(value_width)}  {d.reason}")
        return "\n".join(lines)

    def experiment_yaml(self, title: str) -> str:
        """An ordinary Hydra experiment file: group choices in ``defaults``, values nested, reasons as comments."""
        lines = ["# @package _global_", f"# {title}", "defaults:"]
        lines += [f"  - override /{d.key}: {d.value}  # {d.reason}" for d in self.decisions if d.key in GROUPS]
        tree: dict = {}
        for d in self.decisions:
            if d.key not in GROUPS:
                node = tree
                *parents, leaf = d.key.split(".")
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = d
        lines += _yaml_lines(tree, 0)
        return "\n".join(lines) + "\n"


def format_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{format_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def override(key: str, value) -> str:
    return f"{key}={value}" if key in GROUPS else f"++{key}={format_value(value)}"


def _yaml_lines(tree: dict, indent: int) -> list[str]:
    lines = []
    for key, node in tree.items():
        pad = "  " * indent
        if isinstance(node, Decision):
            flow = yaml.safe_dump(node.value, default_flow_style=True, width=1000).strip()
            flow = flow.removesuffix("\n...").removesuffix("...").strip()
            lines.append(f"{pad}{key}: {flow}  # {node.reason}")
        else:
            lines.append(f"{pad}{key}:")
            lines += _yaml_lines(node, indent + 1)
    return lines


def save_plan(plan: Plan, directory: Path, title: str, log_table: bool = True) -> None:
    """``plan.yaml`` (an experiment file) and ``fingerprint.json`` (with the probe's timings) in ``directory``,
    and (``log_table``) the decision table in the log."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "plan.yaml").write_text(plan.experiment_yaml(title))
    decisions = [[d.key, d.value, d.reason] for d in plan.decisions]
    record = {**plan.fingerprint, "probe": plan.probe, "planning_seconds": plan.seconds, "decisions": decisions}
    tmp = directory / "fingerprint.json.tmp"  # other ranks wait for this file: it appears whole
    tmp.write_text(json.dumps(record, indent=1))
    tmp.replace(directory / "fingerprint.json")
    if not log_table:
        return
    log.info("Plan: %s\n%s", describe(plan), plan.table())
    log.info("Plan saved: %s (an experiment file; fingerprint.json beside it)", directory / "plan.yaml")


def describe(plan: Plan) -> str:
    fp = plan.fingerprint
    size = f"{fp['height']['median']:.0f}x{fp['width']['median']:.0f}"
    return (
        f"{fp['images']} training images (median {size}, {'fixed' if fp['fixed_size'] else 'variable'} size, "
        f"{fp['color_mode']}, {'/'.join(fp['dtypes'])}); planned in {plan.seconds:.1f} s "
        f"(fingerprint {fp.get('seconds', 0):.1f} s{', cached' if not fp.get('seconds') else ''}); "
        f"~{plan.probe.get('planned_steps', 0)} steps on {plan.probe.get('device')}"
    )


def read_plan(directory: Path) -> Plan:
    """The plan :func:`save_plan` wrote in ``directory`` (its decisions are in ``fingerprint.json``)."""
    record = json.loads((directory / "fingerprint.json").read_text())
    decisions = [Decision(key, _int_keys(value), reason) for key, value, reason in record["decisions"]]
    return Plan(decisions, record, record.get("probe", {}))


def _int_keys(value):
    """JSON turned a mask mapping's integer keys into strings (``{"255": 1}``); turn them back."""
    if isinstance(value, dict):
        return {int(k) if isinstance(k, str) and k.lstrip("-").isdigit() else k: v for k, v in value.items()}
    return value
