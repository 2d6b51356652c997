"""Run directory records.

``Point`` is one measured window of one GPU at one setting, one batch and one phase; its fields
are the columns of ``points.csv``. (The run directory reader/writer lives here too.)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Point:
    """One measured window. Energy comes from the counter where the part has one
    (``energy_source == "counter"``); ``joules_integrated`` is the cross-check from sampled
    power; ``true_joules`` is the simulator's ground truth (empty on real hardware)."""

    point_index: int
    gpu_index: int
    gpu_uuid: str
    knob: str  # "power_limit_w" | "sm_clock_mhz" | "observe"
    setting: float  # requested W or MHz (the current value when observing)
    enforced: float  # what the device reported after setting
    batch_size: int
    phase: str
    repeat: int
    window_start_s: float
    window_end_s: float
    seconds: float
    steps: int
    input_tokens: int
    output_tokens: int
    tokens: int
    joules: float
    joules_integrated: float | None
    true_joules: float | None
    energy_source: str  # "counter" | "integrated"
    power_mean_w: float
    power_p99_w: float | None
    power_max_1s_w: float | None
    sm_clock_mean_mhz: float | None
    mem_clock_mean_mhz: float | None
    temp_start_c: float | None
    temp_end_c: float | None
    warmup_s: float
    tokens_per_s: float
    tokens_per_j: float
    j_per_token: float
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    tokens_per_s_per_user: float | None = None
    host_joules: float | None = None
    #: share of window time each clock-event reason was active, "name=share;..." (see CLOCK_EVENT_NAMES)
    clock_event_shares: str = ""
    #: validity flag names, ";"-separated; empty when the point is clean
    flags: str = ""
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def valid(self) -> bool:
        return not self.flags


POINT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(Point) if f.name != "extra")
