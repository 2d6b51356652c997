"""Shared fixtures: every test gets its own simulated-driver state and tokbench state (journals,
locks) directories, so settings one test leaves on a simulated GPU never leak into another."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _sim_state_dir(tmp_path, monkeypatch):
    state = tmp_path / "sim-state"
    monkeypatch.setenv("TOKBENCH_SIM_STATE_DIR", str(state))
    monkeypatch.setenv("TOKBENCH_STATE_DIR", str(tmp_path / "tokbench-state"))
    monkeypatch.delenv("TOKBENCH_SIM_READONLY", raising=False)
    return state
