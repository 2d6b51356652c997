"""The decision log: one CSV row per decision (time, target, setting, measured power, reason),
flushed as it is written so that a killed governor leaves its log behind, and a plot of it."""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import pandas as pd


@dataclass(frozen=True)
class Decision:
    time_utc: str  # signal time (UTC, ISO)
    t_s: float  # device clock
    source: str
    target_w: float | None  # node target (None: no constraint)
    setting: float  # mean of the GPUs' settings
    settings: str  # per GPU, ';'-separated
    zone: str
    expected_w: float  # curve power of the settings x learned ratio, node
    measured_w: float | None  # node, over the meter's window
    energy_j: float | None  # node, from the counters since the start (any window's mean power)
    ratio: float  # mean measured/curve ratio learned
    tokens: float  # finished so far (job), or the curve's estimate
    planned_tokens: float  # what the plan expected so far (schedules), else 0
    reason: str


COLUMNS = [f.name for f in fields(Decision)]


class DecisionLog:
    def __init__(self, path: str | Path | None) -> None:
        self.path = Path(path) if path is not None else None
        self.rows: list[Decision] = []
        self._f = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "w", newline="")  # noqa: SIM115 (held for the run)
            self._w = csv.DictWriter(self._f, fieldnames=COLUMNS)
            self._w.writeheader()

    def add(self, d: Decision) -> None:
        self.rows.append(d)
        if self._f is not None:
            self._w.writerow({k: ("" if v is None else (round(v, 3) if isinstance(v, float) else v))
                              for k, v in asdict(d).items()})
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


def read_log(path: str | Path) -> pd.DataFrame:
    return pd.read_csv(path)


def is_decision_log(path: str | Path) -> bool:
    """Whether ``path`` is a governor's decision log (what `tokbench report` then plots)."""
    p = Path(path)
    if not (p.is_file() and p.suffix == ".csv"):
        return False
    with open(p, newline="") as f:
        return next(csv.reader(f), []) == COLUMNS


def summary(log: pd.DataFrame) -> list[str]:
    """What a decision log says, in a few lines: span, decisions, compliance with the target, tokens."""
    if log.empty:
        return ["the log holds no decision"]
    t = log["t_s"] - log["t_s"].iloc[0]
    bound = log.dropna(subset=["target_w", "measured_w"])
    met = (bound["measured_w"] <= bound["target_w"] * 1.01).mean() if len(bound) else float("nan")
    lines = [f"{len(log)} decisions over {t.iloc[-1]:.0f} s of device time, settings {log['setting'].min():g}-"
             f"{log['setting'].max():g}",
             f"measured node power within 1% of the target or below it at {100 * met:.0f}% of the decisions"
             if len(bound) else "no decision had both a target and a measured power",
             f"tokens: {log['tokens'].iloc[-1]:,.0f}"
             + (f" of {log['planned_tokens'].iloc[-1]:,.0f} planned" if log["planned_tokens"].iloc[-1] else "")]
    return lines


def plot_log(log: pd.DataFrame, path: str | Path, title: str = "tokbench govern") -> Path:
    """Target, measured and expected node power, and the setting, against device time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = log["t_s"] - log["t_s"].iloc[0]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ax.step(t, log["target_w"], where="post", color="C3", label="target")
    ax.plot(t, log["measured_w"], color="C0", label="measured")
    ax.plot(t, log["expected_w"], color="C0", ls=":", lw=0.9, label="expected (curve x ratio)")
    ax.set_xlabel("s")
    ax.set_ylabel("node GPU power, W")
    ax.legend(loc="lower left", fontsize=8)
    ax2 = ax.twinx()
    ax2.step(t, log["setting"], where="post", color="C2", alpha=0.6)
    ax2.set_ylabel("setting (mean)", color="C2")
    ax.set_title(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
