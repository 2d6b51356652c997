#!/usr/bin/env python3
"""Observe-only checks of a real GPU, prepared to run in one short session on a GPU machine.

    python scripts/gpu_check.py                 # report to $OUT/gpu_check.json, else ./gpu_check.json
    python scripts/gpu_check.py --out r.json --only devices,read_cost
    python scripts/gpu_check.py --list

It runs in sections, each in its own process with its own timeout (a hung NVML call or workload
costs one section, not the run), rewrites its JSON report after every section (a run cut off
still reports what it found), and keeps the whole run under a budget (default 400 s, under 7
minutes). It NEVER changes a setting: in every section the binding's setters (every ``nvml*``
function whose verb is Set, Reset, Clear, ...: ``harness.devices.nvml.is_setter_name``) are
replaced by a function that refuses, and CI runs this script against a fake pynvml that records
every setter call (tests/test_devices_gpu_check.py).

Adding a section: write ``def section_x(ctx: dict) -> dict`` (``ctx["report"]`` is the report so
far, ``ctx["timeout_s"]`` its own limit; return JSON-able data, with ``"failed": why`` to mark the
section failed while keeping what it found; an exception marks it failed too) and append
``("x", timeout_s, section_x)`` to ``SECTIONS`` -- or put a ``SECTIONS`` list of such tuples in a
module named in ``OPTIONAL_SECTION_MODULES`` beside this script (e.g. scripts/gpu_check_workloads.py);
it is picked up when present.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCRIPTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = SCRIPTS_DIR.parent
for _p in (str(REPO_ROOT), str(SCRIPTS_DIR)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

Section = tuple[str, float, Callable[[dict], dict]]
REPORT_VERSION = 1
DEFAULT_BUDGET_S = 400.0
#: modules beside this script whose ``SECTIONS`` list is appended when they exist (wired by later issues)
OPTIONAL_SECTION_MODULES = ("gpu_check_workloads", "gpu_check_telemetry", "gpu_check_sweep", "gpu_check_serving")


# --- observe-only guard ---------------------------------------------------------------------------

def guard_observe_only(nv: Any) -> list[str]:
    """Replace every setter of the pynvml module ``nv`` by one that refuses; returns their names."""
    from harness.devices.nvml import is_setter_name

    blocked = []
    for name in dir(nv):
        if is_setter_name(name) and callable(getattr(nv, name, None)):
            def refuse(*_args: Any, _name: str = name) -> None:
                raise RuntimeError(f"gpu_check is observe-only: refused {_name}")
            setattr(nv, name, refuse)
            blocked.append(name)
    return blocked


def _pynvml_guarded() -> Any:
    import pynvml

    guard_observe_only(pynvml)
    return pynvml


# --- sections --------------------------------------------------------------------------------------

#: CALIBRATION.md's measured H100 80GB HBM3 SXM (driver 580.159.04): what to compare a real H100 with
H100_CALIBRATION = {"power_min_w": 200.0, "power_max_w": 700.0, "power_default_w": 700.0,
                    "max_sm_clock_mhz": 1980, "max_mem_clock_mhz": 2619, "idle_power_w": (64.0, 79.0)}


def _open_nvml():
    from harness.devices import open_devices

    return open_devices("nvml")


def compare_with_calibration(row: dict) -> list[str]:
    """Where an H100's ``describe()`` row disagrees with CALIBRATION.md's measured H100 ([] otherwise)."""
    info, lim, rd = row["info"], row.get("power_limits") or {}, row["reading"]
    if "H100" not in info["name"]:
        return []
    c, out = H100_CALIBRATION, []
    for key, got in (("power_min_w", lim.get("min_w")), ("power_max_w", lim.get("max_w")),
                     ("power_default_w", lim.get("default_w")), ("max_sm_clock_mhz", info["max_sm_clock_mhz"]),
                     ("max_mem_clock_mhz", info["max_mem_clock_mhz"])):
        if got is not None and abs(float(got) - c[key]) > 0.5:
            out.append(f"{key}: {got} here, {c[key]} in CALIBRATION.md")
    lo, hi = c["idle_power_w"]
    avg, util = rd.get("power_average_w"), rd.get("utilization_pct")
    if avg is not None and util == 0 and not lo <= avg <= hi:
        out.append(f"idle power {avg:.1f} W here (utilisation 0), {lo:g}-{hi:g} W in CALIBRATION.md")
    return out


def section_devices(ctx: dict) -> dict:
    """`tokbench devices --backend nvml --json`, as a user would run it (its own process)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "harness.cli", "devices", "--backend", "nvml", "--json"],
                       capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=ctx["timeout_s"] - 5)
    out: dict[str, Any] = {"returncode": p.returncode, "seconds": round(time.monotonic() - t0, 3),
                           "stderr": p.stderr[-2000:]}
    if p.returncode != 0:
        out["failed"] = f"tokbench devices exited {p.returncode}: {p.stderr.strip()[-300:]}"
    try:
        out["json"] = json.loads(p.stdout)
    except json.JSONDecodeError:
        out["stdout"] = p.stdout[-2000:]
    else:
        out["calibration_disagreements"] = {str(d["info"]["index"]): compare_with_calibration(d)
                                            for d in out["json"].get("devices", [])}
    return out


def section_state_check(ctx: dict) -> dict:
    """Per GPU: identity, limits, clocks, capabilities and the state check (what could spoil a run)."""
    _pynvml_guarded()
    ds = _open_nvml()
    gpus = []
    try:
        for d in ds.devices:
            entry: dict[str, Any] = {"info": asdict(d.info)}
            state = d.state_check()
            entry["state"] = {**asdict(state), "problems": state.problems}
            for key, get in (("power_limits", lambda d=d: asdict(d.power_limits())),
                             ("sm_clock_lock", lambda d=d: d.sm_clock_lock()),
                             ("supported_sm_clocks", lambda d=d: _clock_summary(d.supported_sm_clocks())),
                             ("reading", lambda d=d: asdict(d.read()))):
                try:
                    entry[key] = get()
                except Exception as e:  # one failing query must not hide the rest
                    entry[key] = {"error": f"{type(e).__name__}: {e}"}
            gpus.append(entry)
    finally:
        ds.close()
    return {"gpus": gpus, "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "cuda_device_order": os.environ.get("CUDA_DEVICE_ORDER")}


def _clock_summary(clocks: list[int]) -> dict:
    steps = sorted({b - a for a, b in zip(clocks, clocks[1:])})
    return {"count": len(clocks), "min_mhz": clocks[0] if clocks else None, "max_mhz": clocks[-1] if clocks else None,
            "steps_mhz": steps[:5]}


class _TimedModule:
    """Stands in for the pynvml module: times every ``nvml*`` call, passes everything else through."""

    def __init__(self, nv: Any) -> None:
        self._nv = nv
        self.times_ns: dict[str, list[int]] = {}

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._nv, name)
        if not (name.startswith("nvml") and callable(value)):
            return value
        times = self.times_ns.setdefault(name, [])

        def timed(*args: Any) -> Any:
            t0 = time.perf_counter_ns()
            try:
                return value(*args)
            finally:
                times.append(time.perf_counter_ns() - t0)

        return timed

    def reset(self) -> None:
        self.times_ns.clear()


def _stats_us(samples_ns: list[int]) -> dict:
    us = sorted(x / 1000 for x in samples_ns)
    if not us:
        return {"calls": 0}
    return {"calls": len(us), "median_us": round(statistics.median(us), 2), "mean_us": round(statistics.fmean(us), 2),
            "p90_us": round(us[int(0.9 * (len(us) - 1))], 2), "min_us": round(us[0], 2), "max_us": round(us[-1], 2)}


def _timed_loop(fn: Callable[[], Any], max_calls: int, max_s: float) -> list[int]:
    out, t_end = [], time.monotonic() + max_s
    while len(out) < max_calls and time.monotonic() < t_end:
        t0 = time.perf_counter_ns()
        fn()
        out.append(time.perf_counter_ns() - t0)
    return out


def section_read_cost(ctx: dict) -> dict:
    """What each NVML query the backend makes costs: every call inside ``read()``, ``read_energy_mj()``,
    ``power_samples()`` and ``state_check()``, timed one by one over many calls (microseconds)."""
    nv = _pynvml_guarded()
    ds = _open_nvml()
    budget_s = max(2.0, (ctx["timeout_s"] - 10) / max(1, len(ds.devices)) / 4)
    scale = 0.05 if ctx.get("quick") else 1.0  # --quick: a smoke run (CI), not a measurement
    if ctx.get("quick"):
        budget_s = 0.5
    gpus = []
    try:
        for d in ds.devices:
            proxy = _TimedModule(nv)
            d.nv = proxy  # the device and its backend look functions up on these at every call
            d.backend.nv = proxy
            entry: dict[str, Any] = {"index": d.info.index, "name": d.info.name}
            for method, call, max_calls in (("read", d.read, 5000), ("read_energy_mj", d.read_energy_mj, 300),
                                            ("power_samples", lambda d=d: d.power_samples(0), 200),
                                            ("state_check", d.state_check, 200)):
                proxy.reset()
                whole = _timed_loop(call, max(5, int(max_calls * scale)), budget_s)
                entry[method] = {"whole_call": _stats_us(whole),
                                 "nvml_calls": {k: _stats_us(v) for k, v in sorted(proxy.times_ns.items())}}
            d.nv = d.backend.nv = nv
            gpus.append(entry)
    finally:
        ds.close()
    return {"gpus": gpus, "calibration_h100_us": {"nvmlDeviceGetPowerUsage": 1.6, "field POWER_INSTANT": 3.0,
                                                  "nvmlDeviceGetTotalEnergyConsumption": 3900.0}}


SECTIONS: list[Section] = [
    ("devices", 60.0, section_devices),
    ("state_check", 60.0, section_state_check),
    ("read_cost", 90.0, section_read_cost),
]


def all_sections() -> list[Section]:
    """``SECTIONS`` plus those of the optional modules present beside this script."""
    import importlib

    out = list(SECTIONS)
    for mod_name in OPTIONAL_SECTION_MODULES:
        if not (SCRIPTS_DIR / f"{mod_name}.py").exists():
            continue
        mod = importlib.import_module(mod_name)
        out.extend(getattr(mod, "SECTIONS", []))
    return out


# --- running ----------------------------------------------------------------------------------------

def report_path(out_arg: str | None) -> Path:
    if os.environ.get("OUT"):
        return Path(os.environ["OUT"]) / "gpu_check.json"
    return Path(out_arg or "gpu_check.json")


def write_report(path: Path, report: dict) -> None:
    """Atomically: a reader (or a kill) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str))
    os.replace(tmp, path)


def run_section_in_child(name: str, timeout_s: float, report: dict, quick: bool = False) -> dict:
    """Run one section in its own process group; kill the group at the timeout."""
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        ctx_path, result_path = Path(tmp) / "ctx.json", Path(tmp) / "result.json"
        ctx_path.write_text(json.dumps({"report": report, "timeout_s": timeout_s, "quick": quick}, default=str))
        t0 = time.monotonic()
        child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--run-section", name,
                                  "--ctx", str(ctx_path), "--result", str(result_path)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            output, _ = child.communicate(timeout=timeout_s)
            status = None
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            output, _ = child.communicate()
            status = "timeout"
        entry: dict[str, Any] = {"timeout_s": round(timeout_s, 1), "seconds": round(time.monotonic() - t0, 3)}
        if result_path.exists():
            entry.update(json.loads(result_path.read_text()))
        if status == "timeout":
            entry["status"] = "timeout"
        elif "status" not in entry:
            entry["status"] = "error"
            entry["error"] = f"section process exited with {child.returncode} and no result"
        if entry["status"] != "ok" and output:
            entry["output_tail"] = output[-3000:]
        return entry


def child_main(name: str, ctx_path: str, result_path: str) -> int:
    sections = {n: fn for n, _t, fn in all_sections()}
    ctx = json.loads(Path(ctx_path).read_text())
    try:
        out = sections[name](ctx)
        # a section may return what it found and still say it failed ("failed": why)
        result = {"status": "error" if out.get("failed") else "ok", "result": out}
        if out.get("failed"):
            result["error"] = str(out["failed"])
    except Exception as e:
        result = {"status": "error", "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-3000:]}
    Path(result_path).write_text(json.dumps(result, default=str))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", help="report path when $OUT is not set (default ./gpu_check.json)")
    ap.add_argument("--only", help="comma-separated section names")
    ap.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="whole-run budget in seconds")
    ap.add_argument("--list", action="store_true", help="list the sections and exit")
    ap.add_argument("--quick", action="store_true", help="few repetitions: a smoke run (CI), not a measurement")
    ap.add_argument("--run-section", help=argparse.SUPPRESS)
    ap.add_argument("--ctx", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.run_section:
        return child_main(args.run_section, args.ctx, args.result)
    sections = all_sections()
    if args.list:
        for name, timeout_s, fn in sections:
            print(f"{name:16s} {timeout_s:6.0f} s  {((fn.__doc__ or '').strip().splitlines() or [''])[0]}")
        return 0
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = set(wanted) - {n for n, _t, _f in sections}
        if unknown:
            ap.error(f"unknown section(s): {', '.join(sorted(unknown))}")
        sections = [s for s in sections if s[0] in wanted]
    path = report_path(args.out)
    t_start = time.monotonic()
    report: dict[str, Any] = {
        "script": "gpu_check", "version": REPORT_VERSION, "observe_only": True,
        "started_utc": datetime.now(UTC).isoformat(timespec="seconds"), "host": platform.node(),
        "python": platform.python_version(), "argv": sys.argv[1:], "budget_s": args.budget_s, "quick": args.quick,
        "sections": {name: {"status": "pending", "timeout_s": t} for name, t, _f in sections},
        "complete": False,
    }
    write_report(path, report)
    for name, timeout_s, _fn in sections:
        left = args.budget_s - (time.monotonic() - t_start)
        if left < 3:
            report["sections"][name] = {"status": "skipped", "error": "whole-run budget spent"}
        else:
            report["sections"][name] = run_section_in_child(name, min(timeout_s, left - 1), report, args.quick)
        report["elapsed_s"] = round(time.monotonic() - t_start, 3)
        write_report(path, report)
        print(f"gpu_check: {name}: {report['sections'][name]['status']} "
              f"({report['sections'][name].get('seconds', 0):.1f} s)", file=sys.stderr)
    report["complete"] = True
    write_report(path, report)
    print(f"gpu_check: report in {path}", file=sys.stderr)
    return 0 if all(s["status"] == "ok" for s in report["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
