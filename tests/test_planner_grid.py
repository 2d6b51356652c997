"""Grid signal files: good ones load with their step; gaps and bad values are refused on one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import ProfileError
from harness.planner.grid import load_grid

ROOT = Path(__file__).resolve().parents[1]
HEAD = "timestamp,available_mw,price_per_mwh,event\n"


def _write(tmp_path, body: str, head: str = HEAD) -> Path:
    p = tmp_path / "grid.csv"
    p.write_text(head + body)
    return p


def test_example_grid_loads_with_its_surplus_peak_and_stress_event():
    g = load_grid(ROOT / "profiles/grids/example-48h.csv", ("solar_mw",))
    assert len(g) == 48 and g.step_h == 1.0
    avail, price, event = g.column("available_mw"), g.column("price_per_mwh"), g.column("event")
    assert avail.max() == 14.0 and price.min() < 0  # windy night: surplus at negative prices
    assert (avail[17:21] == 8.0).all() and price[17:21].min() >= 170  # evening peak
    assert event.sum() == 2 and avail[event == 1].tolist() == [3.0, 3.0]  # one stress event
    assert g.column("solar_mw").max() == 2.0


def test_quarter_hour_steps_are_kept(tmp_path):
    p = _write(tmp_path, "2026-01-01T00:00,5,10,0\n2026-01-01T00:15,5,10,0\n2026-01-01T00:30,4,10,1\n")
    g = load_grid(p)
    assert g.step_h == 0.25 and g.column("event").tolist() == [0, 0, 1]


@pytest.mark.parametrize(
    "body, message",
    [
        (
            "2026-01-01T00:00,5,10,0\n2026-01-01T01:00,5,10,0\n2026-01-01T03:00,5,10,0\n",
            r"line 4: gap in the grid signal \(2 h after the previous interval, expected every 1 h\)",
        ),
        (
            "2026-01-01T00:00,5,10,0\n2026-01-01T01:00,,10,0\n",
            r"line 3: bad value '' in column 'available_mw'",
        ),
        ("2026-01-01T00:00,5,10,0\n2026-01-01T01:00,abc,10,0\n", r"line 3: bad value 'abc'"),
        ("2026-01-01T00:00,5,10,0\n2026-01-01T01:00,nan,10,0\n", r"line 3: bad value 'nan'"),
        (
            "2026-01-01T00:00,5,10,0\n2026-01-01T01:00,-1,10,0\n",
            r"line 3: negative value -1 in column 'available_mw'",
        ),
        ("2026-01-01T00:00,5,10,0\n2026-01-01T00:00,5,10,0\n", r"line 3: timestamps must increase"),
        ("2026-01-01T00:00,5,10,0\nyesterday,5,10,0\n", r"line 3: bad timestamp 'yesterday'"),
        ("2026-01-01T00:00,5,10,2\n", r"line 2: 'event' must be 0 or 1"),
        ("", "grid file has no intervals"),
    ],
)
def test_bad_grid_files_are_refused_with_the_line(tmp_path, body, message):
    with pytest.raises(ProfileError, match=message) as e:
        load_grid(_write(tmp_path, body))
    assert "\n" not in str(e.value)


def test_missing_columns_are_named(tmp_path):
    with pytest.raises(ProfileError, match="needs a 'timestamp' column"):
        load_grid(_write(tmp_path, "1,2\n", head="time,available_mw\n"))
    with pytest.raises(ProfileError, match="no column 'wind_mw'"):
        load_grid(_write(tmp_path, "2026-01-01T00:00,5,10,0\n"), ("wind_mw",))
    with pytest.raises(ProfileError, match="no such grid file"):
        load_grid(tmp_path / "absent.csv")
