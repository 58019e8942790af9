"""Planning a run from the data and the budget: the fingerprint, the device probe, the decisions,
the plan's files (record) and the user's overrides over it (overrides)."""

from segkit.planning.fingerprint import fingerprint
from segkit.planning.overrides import apply_plan
from segkit.planning.planner import plan_run
from segkit.planning.record import Plan, save_plan

__all__ = ["Plan", "apply_plan", "fingerprint", "plan_run", "save_plan"]
