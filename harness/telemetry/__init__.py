"""Measurement: sampler, exact window energy, validity flags, steady state.

``Sampler`` polls the cheap readings and drains the driver's power history; ``Window`` measures
one interval around a workload's steps and returns a ``WindowResult`` per GPU; ``SteadyState``
says when a warm-up is done; ``measure_idle`` gives each GPU's idle watts.
"""

from harness.telemetry.flags import FLAG_NAMES, Tolerances
from harness.telemetry.sampler import HISTORY_COLUMNS, READING_COLUMNS, Sampler
from harness.telemetry.steady import SteadyState
from harness.telemetry.window import SAMPLE_COLUMNS, Window, WindowResult, measure_idle, read_edge

__all__ = [
    "FLAG_NAMES", "HISTORY_COLUMNS", "READING_COLUMNS", "SAMPLE_COLUMNS", "Sampler", "SteadyState", "Tolerances",
    "Window", "WindowResult", "measure_idle", "read_edge",
]
