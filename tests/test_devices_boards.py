"""Simulated boards: seeded board-to-board variation, overrides that plant an outlier, settings that
outlive the process (a state file per node, as a driver keeps them), and every catalog part."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.devices import open_devices
from harness.devices.base import ClockEvent
from harness.devices.catalog import available_parts, load_part
from harness.devices.simulated import BoardOverrides, Load, SimNode
from harness.errors import PermissionDenied, UsageError

REPO_ROOT = Path(__file__).resolve().parents[1]
H100 = load_part("h100-sxm")
COMPUTE = Load(flops=2e14, bytes_moved=1e10, efficiency=0.48)  # ~0.4 s of training-like work


def scenario(node: SimNode) -> list[tuple]:
    """Idle, then compute-bound work: what each board reads."""
    out = []
    node.sleep(2.0)
    for gpu in node.gpus:
        out.append(("idle", gpu.info.uuid, gpu.read(), gpu.read_energy_mj()))
    for _ in range(10):
        for gpu in node.gpus:
            gpu.submit(COMPUTE)
    node.sleep(3.0)
    for gpu in node.gpus:
        out.append(("busy", gpu.read(), gpu.read_energy_mj()))
    return out


def test_same_seed_identical_different_seed_different():
    a = scenario(SimNode(H100, count=4, seed=7, name="a"))
    b = scenario(SimNode(H100, count=4, seed=7, name="a2"))
    c = scenario(SimNode(H100, count=4, seed=8, name="c"))
    strip = [[x for x in row if not (isinstance(x, str) and x.startswith("GPU-"))] for row in a]
    assert strip == [[x for x in row if not (isinstance(x, str) and x.startswith("GPU-"))] for row in b]
    assert [row[2].power_average_w for row in a[:4]] != [row[2].power_average_w for row in c[:4]]
    # boards differ within a node: idle power spreads by leakage
    idle = [row[2].power_average_w for row in a[:4]]
    assert len(set(round(w, 3) for w in idle)) == 4 and max(idle) - min(idle) < 15
    # identity: unique UUIDs and PCI bus ids; the same node name gives the same UUIDs
    uuids = [g.info.uuid for g in SimNode(H100, count=4, seed=7, name="a").gpus]
    assert len(set(uuids)) == 4 and uuids == [row[1] for row in a[:4]]
    assert len({g.info.pci_bus_id for g in SimNode(H100, count=8, seed=0, name="p").gpus}) == 8


def test_an_override_plants_an_outlier():
    ov = dict([BoardOverrides.parse("2:leakage=4"), BoardOverrides.parse("3:efficiency=0.85")])
    node = SimNode(H100, count=4, seed=1, overrides=ov)
    for _ in range(60):  # 30 s of training-like work on every board
        for g in node.gpus:
            g.submit(COMPUTE)
        node.sleep(0.5)
        for g in node.gpus:
            g.synchronize()
    for g in node.gpus:
        g.submit(COMPUTE)
    node.sleep(0.1)
    reads = [g.read() for g in node.gpus]  # while working
    clocks = [r.sm_clock_mhz for r in reads]
    # every board sits on the 700 W cap; the leaky board gets there at a lower clock, and runs hotter
    assert clocks[2] < min(clocks[0], clocks[1]) - 40
    assert reads[2].temperature_c >= max(reads[0].temperature_c, reads[1].temperature_c)
    assert all(r.clock_events & ClockEvent.SW_POWER_CAP for r in reads)
    idle = SimNode(H100, count=4, seed=1, name="idle-ov", overrides=ov)
    idle.sleep(2.0)
    idle_w = [g.read().power_average_w for g in idle.gpus]
    assert idle_w[2] > max(idle_w[0], idle_w[1], idle_w[3]) + 10


def test_slow_board_override_gives_fewer_steps():
    node = SimNode(H100, count=2, seed=0, overrides={1: BoardOverrides(efficiency=0.8)})
    done = []
    for g in node.gpus:
        t0 = node.now()
        for _ in range(20):
            g.submit(COMPUTE)
        g.synchronize()
        done.append(node.now() - t0)
    assert done[1] / done[0] == pytest.approx(1 / 0.8, rel=0.1)


def test_override_parsing_and_read_only_boards():
    idx, ov = BoardOverrides.parse("1:leakage=1.4,sensor_gain=0.03,foreign_pids=11+12,can_set=no")
    assert idx == 1 and ov == BoardOverrides(leakage=1.4, sensor_gain=0.03, foreign_pids=(11, 12), can_set=False)
    with pytest.raises(UsageError, match="unknown key 'bogus'"):
        BoardOverrides.parse("0:bogus=1")
    with pytest.raises(UsageError, match="override for simulated GPU 3"):
        SimNode(H100, count=2, overrides={3: BoardOverrides()})
    node = SimNode(H100, count=2, overrides={1: ov})
    with pytest.raises(PermissionDenied, match="CAP_SYS_ADMIN"):
        node.gpus[1].set_power_limit(300)
    state = node.gpus[1].state_check()
    assert state.foreign_processes == (11, 12) and "other processes computing (pid 11, 12)" in state.problems
    assert not node.gpus[1].info.capabilities.can_set_power_limit


def test_limits_and_locks_are_range_checked():
    gpu = SimNode(H100).gpus[0]
    with pytest.raises(UsageError, match="outside 200-700 W"):
        gpu.set_power_limit(150)
    with pytest.raises(UsageError, match="outside 210-1980 MHz"):
        gpu.lock_sm_clock(1500, 2100)
    assert gpu.supported_sm_clocks()[:2] == [210, 225] and gpu.supported_sm_clocks()[-1] == 1980


# --- settings outlive the process ------------------------------------------------------------------


def _py(code: str) -> subprocess.CompletedProcess:
    # the autouse fixture's TOKBENCH_SIM_STATE_DIR is in os.environ, so children share this test's node state
    import os

    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60,
                          cwd=REPO_ROOT)


def test_limit_and_clock_lock_set_by_one_process_are_read_by_a_new_one():
    setter = _py("from harness.devices import open_devices\n"
                 "ds = open_devices('sim', sim_count=2, sim_seed=5)\n"
                 "ds.devices[1].set_power_limit(420)\n"
                 "ds.devices[1].lock_sm_clock(1200, 1500)\n")
    assert setter.returncode == 0, setter.stderr
    reader = _py("import json\n"
                 "from harness.devices import open_devices\n"
                 "from harness.devices.simulated import Load\n"
                 "d0, d1 = open_devices('sim', sim_count=2, sim_seed=5).devices\n"
                 "for _ in range(30): d1.submit(Load(flops=2e14, bytes_moved=1e10, efficiency=0.5))\n"
                 "d1.clock.sleep(5.0)\n"
                 "r = d1.read()\n"
                 "lim, lock = d1.power_limits(), d1.sm_clock_lock()\n"
                 "print(json.dumps([d0.power_limits().current_w, lim.current_w, lim.enforced_w, lock.lo_mhz,\n"
                 "                  lock.hi_mhz, r.sm_clock_mhz, r.power_average_w, d1.state_check().problems]))\n")
    assert reader.returncode == 0, reader.stderr
    lim0, lim1, enforced1, lo, hi, clock, avg_w, problems = json.loads(reader.stdout)
    assert (lim0, lim1, enforced1, lo, hi) == (700.0, 420.0, 420.0, 1200, 1500)
    assert 1200 <= clock <= 1500 and avg_w <= 420 * 1.03  # the settings act in the new process
    assert problems == ["SM clock locked at 1200-1500 MHz"]
    # a third process puts them back; a fourth sees the defaults
    assert _py("from harness.devices import open_devices\n"
               "d = open_devices('sim', sim_count=2, sim_seed=5).devices[1]\n"
               "d.set_power_limit(d.power_limits().default_w); d.reset_sm_clock()\n").returncode == 0
    d = open_devices("sim", sim_count=2, sim_seed=5).devices[1]
    assert d.power_limits().current_w == 700.0 and d.sm_clock_lock() is None


def test_a_setting_made_while_a_node_runs_takes_effect_at_once():
    """A restore from another process (after a kill) changes a running node's cap."""
    node = SimNode(H100, seed=2)
    gpu = node.gpus[0]
    for _ in range(40):
        gpu.submit(COMPUTE)
    node.sleep(3.0)
    assert gpu.read().power_average_w == pytest.approx(700, rel=0.03)
    assert _py("from harness.devices import open_devices\n"
               "open_devices('sim', sim_seed=2).devices[0].set_power_limit(350)\n").returncode == 0
    node.sleep(3.0)
    assert gpu.read().power_average_w == pytest.approx(350, rel=0.03)


# --- every catalog part ----------------------------------------------------------------------------------


@pytest.mark.parametrize("part_id", available_parts())
def test_each_part_idles_low_sits_on_its_cap_when_compute_bound_and_decodes_below_it(part_id):
    part = load_part(part_id)
    assert {"a100-sxm", "h100-sxm", "h200-sxm", "b200", "l40s"} <= set(available_parts())
    node = SimNode(part, seed=0)
    gpu = node.gpus[0]
    node.sleep(5.0)
    idle_w = gpu.read().power_average_w
    assert idle_w < 0.2 * part.power_max_w
    # compute-bound: ~45% of the part's peak per step at full clock, back to back
    step = Load(flops=part.peak_bf16_tflops * 1e12 * 0.05, bytes_moved=part.mem_bandwidth_tbs * 1e12 * 0.005,
                efficiency=0.48)
    for _ in range(200):
        gpu.submit(step)
    node.sleep(8.0)
    r = gpu.read()
    assert r.power_average_w == pytest.approx(part.power_default_w, rel=0.03)
    assert r.clock_events & ClockEvent.SW_POWER_CAP
    assert part.sm_clock_max_mhz * 0.6 <= r.sm_clock_mhz < part.sm_clock_max_mhz
    gpu.queue.clear()
    # decode-like: bytes-bound, weights of a 1 B model per token
    tok = Load(flops=2.2e9, bytes_moved=2.21e9, efficiency=0.2)
    for _ in range(int(2.0 / (2.21e9 / (part.mem_bandwidth_tbs * 1e12) / 0.2))):
        gpu.submit(tok)
    node.sleep(1.5)
    r = gpu.read()
    assert r.power_average_w < 0.6 * part.power_max_w and r.sm_clock_mhz == part.sm_clock_max_mhz
