"""Profiles and the registry: every shipped profile validates; bad input is one clear line."""

from __future__ import annotations

import sys
import textwrap

import pytest
import typer

import harness.cli
from harness.errors import ProfileError, UsageError
from harness.profiles import list_profiles, load_profile, parse_profile
from workloads import registry
from workloads.base import StepResult, WorkloadSpec

REQUIRED = {"train-llama-1b", "train-llama-8b", "prefill-llama-8b", "decode-llama-8b",
            "decode-llama-1b", "serve-llama-8b", "tiny"}


def test_shipped_profiles_validate():
    assert set(list_profiles()) >= REQUIRED
    p = load_profile("train-llama-1b")
    assert (p.workload.batch_size, p.workload.seq_len, p.workload.model) == (8, 2048, "llama-1b")
    d = load_profile("decode-llama-8b")
    assert d.workload.resolved_phases == ("decode",) and d.workload.resolved_engine == "hf-static"
    assert d.sweep.batch_sizes == [1, 16, 64, 128]
    assert load_profile("serve-llama-8b").workload.resolved_phases == ("serve",)
    assert load_profile("train-llama-8b").workload.checkpointing is True


def _write(tmp_path, body: str):
    path = tmp_path / "bad.toml"
    path.write_text(textwrap.dedent(body))
    return path


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('[workload]\nname = "inference"\nbatch_size = 0\n', "workload.batch_size: Input should be greater"),
        ('[workload]\nname = "inference"\noutput_len = -4\n', "workload.output_len"),
        ('[workload]\nname = "inference"\nbatchsize = 4\n', "workload.batchsize: unknown key; allowed keys:"),
        ('[workload]\nname = "inference"\n[sweep]\norder = "random"\n', "'ascending' or 'interleaved'"),
        ('[workload]\nname = "inference"\n[sweep]\npoints = 5\nstep = 25\n', "points and step: give"),
        ('[workload]\nname = "inference"\nengine = "tgi"\n', "allowed: hf-static, hf-generate, vllm"),
        ('[workload]\nmodel = "llama-70b"\n', "neither a preset"),
        ('[workload\n', "not valid TOML"),
    ],
)
def test_bad_profile_names_file_key_and_allowed(tmp_path, body, expected):
    path = _write(tmp_path, body)
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    message = str(info.value)
    assert message.startswith(str(path)) and expected in message
    assert "\n" not in message


def test_unknown_profile_lists_available():
    with pytest.raises(ProfileError, match="available: .*train-llama-1b"):
        load_profile("train-llama-70b")


class _Toy:
    """A minimal user workload."""

    phases = ("train",)

    def __init__(self, config, device):
        self.spec = WorkloadSpec(name="toy", kind="training", engine="toy", model="none",
                                 precision="fp32", batch_size=config.batch_size)

    def prepare(self, device):
        pass

    def step(self, phase):
        return StepResult(input_tokens=self.spec.batch_size * 10, output_tokens=0)

    def synchronize(self):
        pass

    def close(self):
        pass


def make_toy(config, device):
    return _Toy(config, device)


def not_a_workload(config, device):
    return object()


def test_user_workload_loads_by_module_callable():
    cfg = parse_profile({"workload": {"name": f"{__name__}:make_toy", "batch_size": 3}}).workload
    w = registry.get(cfg, None)
    assert w.step("train").tokens == 30


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("no_such_pkg.mod:make", "cannot import module 'no_such_pkg.mod'"),
        (f"{__name__}:missing", f"module '{__name__}' has no attribute 'missing'"),
        (f"{__name__}:REQUIRED", "is not callable"),
        (f"{__name__}:not_a_workload", "lacks spec, phases, prepare, step, synchronize, close"),
    ],
)
def test_bad_user_workload_is_one_line(target, expected):
    cfg = parse_profile({"workload": {"name": target}}).workload
    with pytest.raises(UsageError) as info:
        registry.get(cfg, None)
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_malformed_user_workload_name_is_refused():
    with pytest.raises(ProfileError, match="not of the form 'package.module:callable'"):
        parse_profile({"workload": {"name": "pkg.mod:"}})


def _cli_with(monkeypatch, argv):
    """Drive harness.cli.main with a stand-in command that loads a profile and builds its workload
    (the lead's `run`/`sweep` commands do the same two calls)."""
    app = typer.Typer()

    @app.command()
    def check(profile: str) -> None:
        registry.get(load_profile(profile).workload, None)

    monkeypatch.setattr(harness.cli, "app", app)
    monkeypatch.setattr(sys, "argv", ["tokbench", *argv])


def test_cli_bad_profile_one_line_nonzero_exit(tmp_path, monkeypatch, capsys):
    path = _write(tmp_path, '[workload]\nname = "inference"\nbatch_size = 0\n')
    _cli_with(monkeypatch, [str(path)])
    with pytest.raises(SystemExit) as info:
        harness.cli.main()
    assert info.value.code != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "workload.batch_size" in err and "Traceback" not in err


def test_cli_bad_module_callable_one_line_nonzero_exit(tmp_path, monkeypatch, capsys):
    path = _write(tmp_path, '[workload]\nname = "no_such_pkg.mod:make"\n')
    _cli_with(monkeypatch, [str(path)])
    with pytest.raises(SystemExit) as info:
        harness.cli.main()
    assert info.value.code != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot import module 'no_such_pkg.mod'" in err
