"""Planning a run from the data and the budget: the fingerprint, the device probe, the decisions."""

from segkit.planning.fingerprint import fingerprint
from segkit.planning.planner import Plan, apply_plan, plan_run, save_plan

__all__ = ["Plan", "apply_plan", "fingerprint", "plan_run", "save_plan"]
