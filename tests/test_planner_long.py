"""A long horizon: the terminal gets the largest curtailments and their totals, files get the rest,
and the plot draws daily bands and duration curves."""

from __future__ import annotations

import numpy as np
import pandas as pd
from planner_fixtures import make_curve

from harness.planner import plan
from harness.planner.outputs import is_long, write_outputs
from harness.planner.tables import curtailments
from harness.records.curves import save_curve

CURVE = make_curve([100, 200, 300, 400], [30_000, 50_000, 60_000, 64_000], [100, 200, 300, 400])


def test_sixteen_days_print_the_largest_events_and_write_all(tmp_path):
    # 16 days, an evening dip every day, deeper each day: 16 curtailments
    hours = 16 * 24
    avail = np.full(hours, 4.0)
    for d in range(16):
        avail[d * 24 + 18 : d * 24 + 21] = 3.5 - 0.1 * d
    save_curve(CURVE, tmp_path / "c.json")
    pd.DataFrame({"timestamp": pd.date_range("2026-01-01", periods=hours, freq="h"), "available_mw": avail}).to_csv(
        tmp_path / "g.csv", index=False
    )
    (tmp_path / "s.toml").write_text(
        'name = "long"\ngpus = 10000\nprovision = "mean"\n[[workloads]]\ncurve = "c.json"\n[grid]\nfile = "g.csv"\n'
    )
    r = plan(tmp_path / "s.toml")
    assert len(r.curtailments) == 16 and is_long(r)
    t = curtailments(r)
    assert t.row_count == 12 and "the 12 largest of 16 events" in t.caption
    shown = [c for c in r.curtailments if c.start.day >= 5]  # the deepest dips are the last twelve
    assert t.columns[0]._cells == [str(c.start) for c in shown]
    written = {p.name for p in write_outputs(r, tmp_path / "out")}
    assert {"curtailments.csv", "plan.png", "schedule.csv", "schedule-default.csv"} <= written
    assert len(pd.read_csv(tmp_path / "out" / "curtailments.csv")) == 16
    assert (tmp_path / "out" / "plan.png").stat().st_size > 20_000
