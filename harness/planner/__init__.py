"""The AI-factory planner: site + calibrated curves (+ grid signal) → steady answers and schedules.

site.py (site file) · grid.py (grid signal) · capacity.py (settings as the site sees them, concave
hull) · steady.py (no grid needed) · horizon.py (aligned arrays, scenarios, objective prices) ·
lp.py (the HiGHS model, reused across scenarios) · schedule.py (whole-unit read-back and totals) ·
network.py (the PyPSA reference and export) · plan.py (the command's one call) · outputs.py
(schedule CSV, summary JSON, plots) · tables.py (what the command prints).
"""

from harness.planner.plan import PlanResult, export_network, plan

__all__ = ["PlanResult", "export_network", "plan"]
