"""Device backends. The one place where the backend is chosen: ``open_devices``."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.devices.base import Device
from harness.errors import BackendUnavailable, UsageError

BACKENDS = ("auto", "nvml", "sim")


@dataclass
class DeviceSet:
    """The GPUs of this node as one backend sees them."""

    devices: list[Device]
    backend: str  # "nvml" | "sim"
    notice: str = ""  # one line to show the user (e.g. why the simulated backend was chosen)
    _closers: list = field(default_factory=list, repr=False)

    def select(self, gpus: str | None) -> list[Device]:
        """Devices named by ``--gpus`` ("0,1", "all", or UUIDs); all when None."""
        if gpus is None or gpus.strip().lower() == "all":
            return list(self.devices)
        chosen: list[Device] = []
        for token in (t.strip() for t in gpus.split(",") if t.strip()):
            match = [d for d in self.devices if token == str(d.info.index) or token == d.info.uuid]
            if not match:
                known = ", ".join(str(d.info.index) for d in self.devices)
                raise UsageError(f"unknown GPU '{token}' (this node has GPUs {known})")
            if match[0] not in chosen:
                chosen.append(match[0])
        return chosen

    def close(self) -> None:
        for d in self.devices:
            d.close()
        for close in self._closers:
            close()


def open_devices(backend: str = "auto", sim_gpu: str = "h100-sxm", sim_count: int = 1, sim_seed: int = 0,
                 sim_overrides: list[str] | None = None, sim_node: str | None = None) -> DeviceSet:
    """Open this node's GPUs.

    ``auto`` uses NVML when a GPU answers and otherwise the simulated parts, saying so in
    ``notice``. ``sim_overrides`` are ``"INDEX:key=value,..."`` strings (see ``BoardOverrides``).
    """
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend '{backend}' (choose from {', '.join(BACKENDS)})")
    if backend in ("auto", "nvml"):
        from harness.devices.nvml import NvmlBackend

        try:
            nv = NvmlBackend()
        except BackendUnavailable as e:
            if backend == "nvml":
                raise
            ds = _open_sim(sim_gpu, sim_count, sim_seed, sim_overrides, sim_node)
            ds.notice = f"{e}; using the simulated backend ({sim_count} x {sim_gpu})"
            return ds
        return DeviceSet(nv.devices(), "nvml", _closers=[nv.shutdown])
    return _open_sim(sim_gpu, sim_count, sim_seed, sim_overrides, sim_node)


def _open_sim(part_id: str, count: int, seed: int, overrides: list[str] | None, node: str | None) -> DeviceSet:
    from harness.devices.catalog import load_part
    from harness.devices.simulated import BoardOverrides, SimNode

    parsed = dict(BoardOverrides.parse(s) for s in (overrides or []))
    sim = SimNode(load_part(part_id), count=count, seed=seed, name=node, overrides=parsed)
    return DeviceSet(list(sim.gpus), "sim")


def describe(device: Device) -> dict:
    """Everything `tokbench devices` shows about one GPU, as plain data."""
    from dataclasses import asdict

    from harness.errors import TokbenchError

    info = asdict(device.info)
    try:
        limits: dict | None = asdict(device.power_limits())
    except TokbenchError as e:
        limits = {"error": str(e)}
    reading = asdict(device.read())
    state = device.state_check()
    lock = device.sm_clock_lock()
    return {
        "info": info,
        "power_limits": limits,
        "reading": reading,
        "sm_clock_lock": None if lock is None else asdict(lock),
        "state": {**asdict(state), "problems": state.problems},
    }
