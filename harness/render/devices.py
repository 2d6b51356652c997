"""The `tokbench devices` table."""

from __future__ import annotations

from rich.table import Table

from harness.render.fit import Column, fitted_table


def _w(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}"


def devices_table(backend: str, rows: list[dict], width: int = 200) -> Table:
    cells = []
    for r in rows:
        info, lim, rd, caps = r["info"], r["power_limits"] or {}, r["reading"], r["info"]["capabilities"]
        lock = r["sm_clock_lock"]
        problems = r["state"]["problems"]
        may = "yes" if caps["can_set_power_limit"] else f"no ({caps['permission_note']})"
        cells.append([
            str(info["index"]),
            info["name"].replace("NVIDIA ", ""),
            f"{_w(lim.get('min_w'))}/{_w(lim.get('default_w'))}/{_w(lim.get('max_w'))}" if "error" not in lim
            else lim["error"],
            f"{_w(lim.get('current_w'))} ({_w(lim.get('enforced_w'))})",
            f"{_w(rd['sm_clock_mhz'])}/{info['max_sm_clock_mhz']}",
            "-" if lock is None else f"{lock['lo_mhz']}-{lock['hi_mhz']}",
            _w(rd["temperature_c"]),
            f"{_w(rd['power_instant_w'])}/{_w(rd['power_average_w'])}",
            "yes" if caps["energy_counter"] else "no",
            may,
            "; ".join(problems) if problems else "[green]ok[/]",
        ])
    columns = [Column("#"), Column("name", justify="left", wraps=True), Column("limit W min/def/max", 3),
               Column("limit W (enforced)"), Column("SM MHz now/max", 5), Column("SM lock", 6), Column("temp C", 7),
               Column("W inst/avg", 4), Column("energy counter", 8), Column("may set", 2, justify="left", wraps=True),
               Column("state", 1, justify="left", wraps=True)]
    return fitted_table(columns, cells, width, title=f"GPUs ({backend} backend)", title_justify="left")
