"""A small OpenAI-compatible streaming server for the serving tests: the ``tiny`` Llama preset
(random weights) on the CPU behind ``POST /v1/completions`` (SSE, ``stream_options.include_usage``)
and ``GET /v1/models``.

Every request is logged as one JSON line with the server's own timestamps (``time.monotonic``,
the same clock the client uses on this host): arrival, each chunk written, end, token counts and
how many requests were in flight when it arrived. ``--token-delay-ms`` (and ``--prefill-delay-ms``) stretch every
generated token (and the prompt) like a larger model on a slower device would, so latencies are long against loopback
transit. Fault switches make it misbehave on purpose (HTTP errors, malformed events, dying,
never becoming ready).

    python tests/serving_server.py --port 8123 --log /tmp/server.jsonl
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class Engine:
    """Greedy generation with the tiny model; one request at a time per call, KV cache per request."""

    def __init__(self, model: str) -> None:
        import torch
        from transformers.utils import logging as hf_logging

        from workloads import models

        hf_logging.set_verbosity_error()
        torch.set_num_threads(1)
        self.torch = torch
        self.net = models.build_model(model, dtype=torch.float32, device="cpu", seed=0)
        self.vocab = models.resolve(model)[0].vocab

    def first(self, ids: list[int]) -> tuple[int, object]:
        with self.torch.no_grad():
            out = self.net(self.torch.tensor([ids]), use_cache=True)
        return int(out.logits[0, -1].argmax()), out.past_key_values

    def next(self, token: int, past: object) -> tuple[int, object]:
        with self.torch.no_grad():
            out = self.net(self.torch.tensor([[token]]), past_key_values=past, use_cache=True)
        return int(out.logits[0, -1].argmax()), out.past_key_values


def _usage(ids: list[int], chunk_times: list[float]) -> dict[str, int]:
    out = len(chunk_times)
    return {"prompt_tokens": len(ids), "completion_tokens": out, "total_tokens": len(ids) + out}


def build_app(args: argparse.Namespace) -> web.Application:
    engine = None if args.no_model else Engine(args.model)
    log = open(args.log, "a", buffering=1) if args.log else None  # noqa: SIM115 (lives as long as the app)
    state = {"in_flight": 0, "count": 0, "t_start": time.monotonic()}

    async def models_route(request: web.Request) -> web.Response:
        if args.never_ready or time.monotonic() - state["t_start"] < args.ready_after_s:
            return web.Response(status=503, text="loading")
        return web.json_response({"object": "list", "data": [{"id": args.served_name, "object": "model"}]})

    async def completions(request: web.Request) -> web.StreamResponse:
        t_arrival = time.monotonic()
        state["count"] += 1
        n = state["count"]
        if args.die_after and n > args.die_after:
            os._exit(3)
        state["in_flight"] += 1
        in_flight = state["in_flight"]
        counted = True
        body = await request.json()
        ids: list[int] = []
        chunk_times: list[float] = []
        t_end = None
        try:
            if args.http_error_every and n % args.http_error_every == 0:
                return web.Response(status=500, text="injected failure")
            prompt = body["prompt"]
            ids = [int(t) % (engine.vocab if engine else 512) for t in prompt] if isinstance(prompt, list) \
                else [sum(map(ord, w)) % 512 for w in str(prompt).split()]
            max_tokens = int(body.get("max_tokens", 16))
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            token, past = (await asyncio.to_thread(engine.first, ids)) if engine else (1, None)
            if args.prefill_delay_ms:
                await asyncio.sleep(args.prefill_delay_ms / 1000.0)
            for i in range(max_tokens):
                if args.token_delay_ms:
                    await asyncio.sleep(args.token_delay_ms / 1000.0)
                if args.malformed_every and n % args.malformed_every == 0 and i == 1:
                    await resp.write(b"data: {not json\n\n")
                    break
                chunk = {"id": f"cmpl-{n}", "object": "text_completion", "model": args.served_name,
                         "choices": [{"index": 0, "text": f" t{token}", "finish_reason": None}]}
                await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                chunk_times.append(time.monotonic())
                if i + 1 < max_tokens and engine:
                    token, past = await asyncio.to_thread(engine.next, token, past)
            if (body.get("stream_options") or {}).get("include_usage"):
                usage = _usage(ids, chunk_times)
                final = {"id": f"cmpl-{n}", "object": "text_completion", "choices": [], "usage": usage}
                await resp.write(b"data: " + json.dumps(final).encode() + b"\n\n")
            # leave the in-flight count before the last event, so that a closed-loop client's next
            # request can never be counted together with the one it replaces
            state["in_flight"] -= 1
            counted = False
            await resp.write(b"data: [DONE]\n\n")
            t_end = time.monotonic()
            await resp.write_eof()
            return resp
        finally:
            if counted:
                state["in_flight"] -= 1
            if log and ids:  # every request that started streaming, cut off or not (t_end None)
                first = chunk_times[0] if chunk_times else None
                log.write(json.dumps({"n": n, "head": ids[:3], "t_arrival": t_arrival, "t_first": first,
                                      "chunk_times": chunk_times, "t_end": t_end, "in_flight": in_flight,
                                      **_usage(ids, chunk_times)}) + "\n")

    app = web.Application()
    app.router.add_get("/v1/models", models_route)
    app.router.add_post("/v1/completions", completions)
    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def argv(port: int, *flags: str) -> list[str]:
    """The command that starts this server on ``port`` (what a profile's ``command`` holds)."""
    return [sys.executable, str(Path(__file__).resolve()), "--port", str(port), *flags]


def spawn(port: int, *flags: str, timeout_s: float = 60.0, wrapper: tuple[str, ...] = ()) -> subprocess.Popen:
    """Start the server (behind ``wrapper``, e.g. ``taskset -c 0``) and wait until it answers."""
    proc = subprocess.Popen([*wrapper, *argv(port, *flags)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"test server on port {port} did not start")


def main(cli_args: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", default="tiny")
    p.add_argument("--served-name", default="tiny")
    p.add_argument("--log", default=None)
    p.add_argument("--token-delay-ms", type=float, default=0.0)
    p.add_argument("--prefill-delay-ms", type=float, default=0.0)
    p.add_argument("--no-model", action="store_true", help="answer instantly with a fixed token (benchmarks)")
    p.add_argument("--http-error-every", type=int, default=0)
    p.add_argument("--malformed-every", type=int, default=0)
    p.add_argument("--die-after", type=int, default=0)
    p.add_argument("--never-ready", action="store_true")
    p.add_argument("--ready-after-s", type=float, default=0.0)
    p.add_argument("--pid-file", default=None, help="write this process's pid (and its CUDA_VISIBLE_DEVICES) here")
    args = p.parse_args(cli_args)
    warnings.filterwarnings("ignore")
    # the model runs in worker threads; a short GIL switch interval keeps the event loop's
    # timestamps (arrival, chunk written) within a fraction of a millisecond of the socket's
    sys.setswitchinterval(0.0002)
    logging.getLogger("aiohttp").setLevel(logging.CRITICAL)
    if args.pid_file:
        Path(args.pid_file).write_text(f"{os.getpid()} {os.environ.get('CUDA_VISIBLE_DEVICES', '')}")
    web.run_app(build_app(args), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
