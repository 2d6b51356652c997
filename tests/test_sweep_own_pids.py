"""In a container NVML lists this run's own GPU process under a host pid: a pid that appears
while the sweep creates its contexts is its own, not a foreign process."""

from __future__ import annotations

from harness.devices.base import StateCheck
from harness.sweep.loop import LiveStatus, SweepContext, _prepare
from harness.sweep.plan import SweepPlan


class _Device:
    def __init__(self, host_pids: list[int]) -> None:
        self.host_pids = host_pids

    def state_check(self) -> StateCheck:
        return StateCheck(foreign_processes=tuple(self.host_pids))


class _Workload:
    def __init__(self, device: _Device) -> None:
        self.device = device

    def prepare(self, device: _Device) -> None:
        device.host_pids.append(424242)  # our context, as the driver names it from outside the container


def test_pids_appearing_during_prepare_are_our_own():
    dev = _Device([777])  # someone else was already there
    ctx = SweepContext(devices=[dev], plan=SweepPlan(knob="power-limit", settings=(700,), batch_sizes=(1,)),
                       source=None, make_workload=lambda d, b: _Workload(d), run_dir=None, sampler=None,
                       guard=None, status=LiveStatus())
    _prepare(ctx, 1)
    assert ctx.own_pids == frozenset({424242})
    assert 777 not in ctx.own_pids
