"""Validity flags a window can raise, and the tolerances that decide them."""

from __future__ import annotations

from dataclasses import dataclass

#: flag -> one line a report prints. A point with any flag is not ``valid``.
FLAG_NAMES: dict[str, str] = {
    "integral_mismatch": "energy counter and integrated sampled power disagree beyond tolerance",
    "sample_gap": "the sampler left a gap in the window (readings missing)",
    "history_gap": "the driver's power-sample history has a gap (samples lost between drains)",
    "too_short": "window shorter than the minimum for an exact counter delta",
    "setting_mismatch": "enforced power limit or SM clock differs from the requested one",
    "temperature_drift": "GPU temperature changed beyond tolerance during the window",
    "thermal_slowdown": "thermal slowdown was active during the window",
    "hw_slowdown": "hardware slowdown or power brake was active during the window",
    "counter_reset": "energy counter went backwards (driver reload): energy is from integrated power",
    "missing_field": "a reading the part should report came back empty",
    "foreign_process": "another process was computing on the GPU",
    "clocks_locked": "SM clocks were locked by someone else",
    "mig_enabled": "MIG is enabled on the GPU",
    "edge_unaligned": "the energy counter did not tick at a window edge within one update period",
    "not_settled": "power and SM clock did not settle before the warm-up timed out",
    "edge_uncertain": "no power history: the stretch between a counter tick and a window edge was filled from "
                      "polled power, whose lag makes the energy uncertain beyond tolerance (bound in the notes)",
    "counter_stuck": "the energy counter did not move while the GPU drew power: energy is from integrated power",
    "sampler_error": "the sampler's reads failed during the window (the errors are in the notes)",
    # serving under load (endpoint workloads, docs/serving.md)
    "server_errors": "the server failed more requests ending in the window than the profile's max_error_rate",
    "loadgen_lag": "the load generator fell behind (p99 event-loop or dispatch delay above max_lag_ms)",
    "short_output": "a request came back with fewer tokens than asked (EOS not ignored by the server)",
    "usage_mismatch": "the server's usage report was missing or counted fewer tokens than chunks streamed",
    "over_cap": "mean power over the window exceeded the enforced power limit by more than 1%",
}


@dataclass(frozen=True)
class Tolerances:
    """Thresholds for the validity flags (all overridable from a profile)."""

    #: |integrated - counter| / counter above which ``integral_mismatch`` is raised
    integral_rel: float = 0.03
    #: which sampled power the cross-check integrates: "best" (history, else instant, else
    #: average), or one of "history", "instant", "average"
    integral_source: str = "best"
    #: a gap between readings longer than this many sampler periods is a ``sample_gap``
    gap_periods: float = 4.0
    #: a history gap longer than this many sample spacings (median) is a ``history_gap``
    history_gap_factor: float = 3.0
    setting_w: float = 1.0
    setting_mhz: float = 15.0
    temp_drift_c: float = 5.0
    #: share of the window a slowdown reason may be active before it is flagged
    slowdown_share: float = 0.01
    #: a window shorter than this is ``too_short``: the counter's 100 ms steps at its two edges (and one
    #: update of every polled field) weigh too much against fewer than ten of them
    min_window_s: float = 1.0
    #: longest wait for an energy-counter tick at an edge (one update period plus margin)
    counter_period_s: float = 0.12
    #: without power history, a bound on the edge correction above this share of the energy is flagged
    edge_rel: float = 0.005
    #: mean power above the enforced limit by more than this share raises ``over_cap``
    over_cap_rel: float = 0.01

    def __post_init__(self) -> None:
        if self.integral_source not in ("best", "history", "instant", "average"):
            raise ValueError(f"unknown integral_source '{self.integral_source}'")
