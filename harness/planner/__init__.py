"""The AI-factory planner: site + calibrated curves (+ grid signal) → steady answers and schedules.

site.py (site file) · grid.py (grid signal) · fleet.py (settings as the site sees them, concave hull)
· steady.py (no grid needed) · network.py (PyPSA model, solve, read-back) · plan.py (the command's
one call) · outputs.py (schedule CSV, summary JSON, plots).
"""

from harness.planner.plan import PlanResult, export_network, plan

__all__ = ["PlanResult", "export_network", "plan"]
