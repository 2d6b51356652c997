"""Shared fixtures: every test gets its own simulated-driver state and tokbench state (journals,
locks) directories, so settings one test leaves on a simulated GPU never leak into another."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import fake_pynvml
import pytest

# Tests read tables as a pipe shows them (harness/cli.py: 200 columns unless COLUMNS says otherwise);
# pytest-xdist's workers set COLUMNS=80, which would make a parallel run see other tables.
for _name in ("COLUMNS", "LINES"):
    os.environ.pop(_name, None)


@pytest.fixture(autouse=True)
def _sim_state_dir(tmp_path, monkeypatch):
    state = tmp_path / "sim-state"
    monkeypatch.setenv("TOKBENCH_SIM_STATE_DIR", str(state))
    monkeypatch.setenv("TOKBENCH_STATE_DIR", str(tmp_path / "tokbench-state"))
    monkeypatch.delenv("TOKBENCH_SIM_READONLY", raising=False)
    return state


# --- fake NVML (tests/fake_pynvml.py) ---------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[1]
FAKE_NVML_PATH = Path(__file__).resolve().parent / "fake_nvml_path"


@pytest.fixture
def fake_nvml(monkeypatch):
    """A fake ``pynvml`` in ``sys.modules``: the real NVML backend runs against it.

    Configure it through ``fake_nvml.config`` (a ``FakeConfig``; its ``FakeGpu`` entries are the
    live driver state) before opening the backend; ``fake_nvml.setter_calls`` lists every setter
    call made, ``fake_nvml.calls`` counts every NVML call.
    """
    fake = fake_pynvml.FakeNvml()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    return fake


@dataclass
class FakeNvmlProc:
    """Environment for subprocesses that should see the fake NVML (``env``), and what they did."""

    config_path: Path
    log_path: Path
    env: dict

    def configure(self, config: fake_pynvml.FakeConfig) -> None:
        self.config_path.write_text(config.to_json())

    def setter_calls(self) -> list[dict]:
        return fake_pynvml.read_setter_log(self.log_path)


@pytest.fixture
def fake_nvml_proc(tmp_path):
    """Run subprocesses against the fake NVML: pass ``fake_nvml_proc.env`` to ``subprocess.run``.

    ``python -m harness.cli ... --backend nvml`` then talks to the fake; settings made by one
    process are replayed in the next (as a driver keeps them); ``setter_calls()`` reads the log.
    """
    config_path, log_path = tmp_path / "fake-nvml.json", tmp_path / "fake-nvml-setters.jsonl"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(FAKE_NVML_PATH), str(REPO_ROOT), env.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)
    env["TOKBENCH_FAKE_NVML_CONFIG"] = str(config_path)
    env["TOKBENCH_FAKE_NVML_LOG"] = str(log_path)
    proc = FakeNvmlProc(config_path, log_path, env)
    proc.configure(fake_pynvml.FakeConfig())
    return proc
