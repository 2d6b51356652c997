"""Host CPU energy from RAPL (Linux powercap), where this process may read it."""

from __future__ import annotations

from pathlib import Path

POWERCAP = Path("/sys/class/powercap")


class Rapl:
    """Package-level RAPL counters (``intel-rapl:N``, not their sub-zones, which the package
    already includes). ``available`` is False when there are none or they are not readable
    (recent kernels restrict ``energy_uj`` to root)."""

    def __init__(self, root: Path = POWERCAP) -> None:
        self.zones: list[tuple[Path, int]] = []
        if not root.is_dir():
            return
        for zone in sorted(root.glob("intel-rapl:*")):
            if zone.name.count(":") != 1:
                continue  # a sub-zone (core, uncore, dram) counted inside its package
            try:
                int((zone / "energy_uj").read_text())
                wrap = int((zone / "max_energy_range_uj").read_text())
            except (OSError, ValueError):
                continue
            self.zones.append((zone / "energy_uj", wrap))

    @property
    def available(self) -> bool:
        return bool(self.zones)

    def read_uj(self) -> list[int] | None:
        if not self.zones:
            return None
        try:
            return [int(path.read_text()) for path, _ in self.zones]
        except (OSError, ValueError):
            return None

    def delta_j(self, start: list[int] | None, end: list[int] | None) -> float | None:
        """Joules between two reads, undoing each zone's wrap (one wrap at most per window)."""
        if start is None or end is None or len(start) != len(end):
            return None
        total = 0
        for (_, wrap), a, b in zip(self.zones, start, end):
            total += b - a if b >= a else b + wrap - a
        return total / 1e6
