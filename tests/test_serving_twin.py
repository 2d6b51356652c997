"""The continuous-batching serving twin on the simulated H100: the endpoint profile runs without a
GPU, and the serving figures move the way a real server's do."""

from __future__ import annotations

import pytest

from harness.sweep.run import SweepOptions, run_sweep
from workloads.config import EndpointConfig, WorkloadConfig
from workloads.serving_twin import ServingTwin

PROFILE = """
[workload]
name = "endpoint"
model = "served-name"
input_len = 128
output_len = 256

[workload.endpoint]
twin_model = "llama-8b"
tpot_ms = 8

[sweep]
knob = "power-limit"
repeats = 1
warmup_min_s = 2
warmup_max_s = 10
window_s = 3
"""


def _sweep(tmp_path, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "serve.toml"
    path.write_text(PROFILE)
    return run_sweep(SweepOptions(profile=str(path), backend="sim", out=str(tmp_path / "out"), yes=True, **kw)).points


def test_per_user_speed_falls_and_per_gpu_speed_rises_with_concurrency(tmp_path):
    pts = _sweep(tmp_path, values=(700.0,), batch_sizes=(1, 8, 64))
    assert [p.batch_size for p in pts] == [1, 8, 64]
    per_user = [p.tokens_per_s_per_user for p in pts]
    per_gpu = [p.output_tokens_per_s for p in pts]
    assert per_user[0] > per_user[1] > per_user[2]
    assert per_gpu[2] > 4 * per_gpu[1] > 4 * 4 * per_gpu[0]
    for p in pts:
        assert p.mean_in_flight == pytest.approx(p.batch_size, rel=0.01)
        assert p.flags == "" and p.requests_errors == 0 and p.requests_ok > 0
        # per-user speed is the inverse of the time per output token, give or take the prefills
        assert p.tokens_per_s_per_user == pytest.approx(1000 / p.tpot_ms, rel=0.1)
    # goodput: batch 1 meets TPOT <= 8 ms on every request; batch 64 on none
    assert pts[0].tpot_ms_p99 <= 8 < pts[2].tpot_ms_p50
    assert pts[0].goodput_rps * pts[0].seconds == pytest.approx(pts[0].requests_ok) and pts[2].goodput_rps == 0


def test_decode_heavy_serving_cap_does_not_bind_above_its_draw_but_the_clock_saves_energy(tmp_path):
    capped = _sweep(tmp_path / "cap", values=(700.0, 620.0), batch_sizes=(16,))
    draw = max(p.power_mean_w for p in capped)
    assert draw < 600  # decode-heavy at concurrency 16 draws below both caps
    assert capped[1].output_tokens_per_s == pytest.approx(capped[0].output_tokens_per_s, rel=0.01)
    clocked = _sweep(tmp_path / "clock", knob="sm-clock", values=(1980.0, 1400.0), batch_sizes=(16,))
    fast, slow = clocked
    assert slow.sm_clock_mean_mhz < 1450 and fast.sm_clock_mean_mhz > 1900
    assert slow.output_tokens_per_s > 0.9 * fast.output_tokens_per_s  # memory-bound: little speed lost
    assert slow.output_tokens / slow.joules > 1.15 * fast.output_tokens / fast.joules  # >= 15% less energy


def test_the_batch_stops_growing_at_the_kv_capacity(tmp_path):
    from harness.devices import open_devices

    dev = open_devices("sim", sim_gpu="h100-sxm", sim_node="serving-twin-kv").devices[0]
    cfg = WorkloadConfig(name="endpoint", model="m", batch_size=64, input_len=1024, output_len=64,
                         endpoint=EndpointConfig(twin_model="llama-8b", twin_kv_share=0.02))
    twin = ServingTwin(cfg)
    twin.prepare(dev)
    assert 0 < twin.max_seqs < 64
    t0 = dev.clock.now()
    for _ in range(20):
        twin.step("serve")
        assert len(twin._running) <= twin.max_seqs
    f = twin.interval_fields(t0, dev.clock.now())
    # users beyond the capacity wait in the queue: the time to first token carries the wait
    assert f["mean_in_flight"] == pytest.approx(64, rel=0.01)
    assert f["ttft_ms"] > 5 * f["tpot_ms"]


def test_the_vllm_profile_runs_on_the_simulated_gpu(tmp_path):
    from harness.profiles import load_profile

    e = load_profile("serve-vllm-8b").workload.endpoint
    assert e.command[:2] == ["vllm", "serve"] and "dummy" in e.command and e.twin_model == "llama-8b"
    pts = run_sweep(SweepOptions(profile="serve-vllm-8b", backend="sim", out=str(tmp_path), yes=True, values=(700.0,),
                                 batch_sizes=(8,), repeats=1, window_s=2, warmup_min_s=1, warmup_max_s=5)).points
    (p,) = pts
    assert p.flags == "" and p.output_tokens > 0 and p.mean_in_flight == pytest.approx(8, rel=0.01)


@pytest.mark.parametrize(("body", "expected"), [
    ('name = "endpoint"\n', "needs an [workload.endpoint] table"),
    ('name = "endpoint"\nphases = ["decode"]\n[workload.endpoint]\n', "one phase, serve"),
    ('name = "inference"\n[workload.endpoint]\n', "only the 'endpoint' workload"),
    ('name = "endpoint"\n[workload.endpoint]\nload = "burst"\n', "'closed' or 'open'"),
    ('name = "endpoint"\n[workload.endpoint]\ncommand = ["srv", "{model_dir}"]\n', "dummy_model (a preset) is not set"),
    ('name = "endpoint"\n[workload.endpoint]\ntwin_model = "gpt-9"\n', "is not a preset"),
])
def test_bad_endpoint_profiles_are_one_line(tmp_path, body, expected):
    from harness.errors import ProfileError
    from harness.profiles import load_profile

    path = tmp_path / "bad.toml"
    path.write_text("[workload]\n" + body)
    with pytest.raises(ProfileError, match=None) as err:
        load_profile(str(path))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_open_loop_below_capacity_serves_what_arrives():
    from harness.devices import open_devices

    dev = open_devices("sim", sim_gpu="h100-sxm", sim_node="serving-twin-open").devices[0]
    cfg = WorkloadConfig(name="endpoint", model="m", batch_size=20, input_len=128, output_len=64,
                         endpoint=EndpointConfig(twin_model="llama-8b", load="open"))
    twin = ServingTwin(cfg)
    twin.prepare(dev)
    for _ in range(8):  # 2 s to fill up
        twin.step("serve")
    t0 = dev.clock.now()
    for _ in range(40):
        twin.step("serve")
    f = twin.interval_fields(t0, dev.clock.now())
    seconds = dev.clock.now() - t0
    # 20 requests/s x 64 tokens: the server keeps up, so it emits what arrives (Poisson noise ~ 1/sqrt(200))
    assert f["output_tokens_per_s"] == pytest.approx(20 * 64, rel=0.15)
    assert f["requests_ok"] / seconds == pytest.approx(20, rel=0.2)
    # Little's law: users in flight = arrival rate x time in the system; a light batch decodes fast
    assert f["mean_in_flight"] == pytest.approx(20 * f["e2e_ms_mean"] / 1000, rel=0.15)
    assert f["tpot_ms"] < 10


def test_a_dummy_model_directory_is_written_for_the_server_command(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    from workloads import dummy_model

    command = ["vllm", "serve", "{model_dir}", "--load-format", "dummy"]
    filled = dummy_model.fill(command, "tiny")
    assert filled[0:2] == ["vllm", "serve"] and filled[3:] == command[3:]
    where = filled[2]
    assert dummy_model.fill(command, "tiny") == filled  # one directory per process
    assert AutoConfig.from_pretrained(where, local_files_only=True).vocab_size == 512
    tok = AutoTokenizer.from_pretrained(where, local_files_only=True)
    assert tok.decode([5, 511]) == "t5 t511" and tok("t7 t8")["input_ids"] == [7, 8]
    assert dummy_model.fill(command, None) == command
