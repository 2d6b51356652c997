"""Host energy from RAPL, on a fake powercap tree."""

from __future__ import annotations

import pytest

from harness.telemetry.rapl import Rapl


def _zone(root, name, uj, wrap=262_143_328_850):
    z = root / name
    z.mkdir()
    (z / "energy_uj").write_text(f"{uj}\n")
    (z / "max_energy_range_uj").write_text(f"{wrap}\n")
    return z


def test_packages_only_and_wrap(tmp_path):
    _zone(tmp_path, "intel-rapl:0", 1_000_000)
    _zone(tmp_path, "intel-rapl:0:0", 500_000)  # a core sub-zone: already inside the package
    p1 = _zone(tmp_path, "intel-rapl:1", 262_143_000_000)
    rapl = Rapl(tmp_path)
    assert rapl.available and len(rapl.zones) == 2
    start = rapl.read_uj()
    (tmp_path / "intel-rapl:0" / "energy_uj").write_text("3000000\n")  # +2 J
    (p1 / "energy_uj").write_text("671150\n")  # wrapped: +1 J
    assert rapl.delta_j(start, rapl.read_uj()) == pytest.approx(3.0)


def test_unreadable_or_absent(tmp_path):
    assert not Rapl(tmp_path / "none").available
    z = _zone(tmp_path, "intel-rapl:0", 1)
    (z / "energy_uj").write_text("not a number")
    rapl = Rapl(tmp_path)
    assert not rapl.available and rapl.read_uj() is None and rapl.delta_j(None, None) is None
