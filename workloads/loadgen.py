"""An async streaming load generator for an OpenAI-compatible ``/v1/completions`` endpoint.

It runs on its own thread and event loop, continuously, so that the sweep's measurement window
cuts an interval out of a steady load (docs/serving.md). Two disciplines:

* closed loop: ``concurrency`` workers, each sends its next request as soon as the last one ends,
  so exactly that many are in flight;
* open loop: requests arrive at ``rate`` per second with exponential gaps (Poisson), or gamma gaps
  of shape ``burstiness`` (< 1 burstier, > 1 smoother), whatever the server's speed.

Every request becomes a ``RequestRecord`` stamped with ``time.monotonic`` (the harness's wall
clock). The client is aiohttp: its streaming reader hands over the bytes as they arrive, with no
per-chunk object churn, which keeps one client core well above the rates a GPU server reaches
(scripts/bench_serving_client.py). Prompts are token ids, unique per request from the first id
on, so no prefix cache can hit; the server's usage report gives the token counts.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from dataclasses import dataclass, field
from typing import Any

#: token ids the synthetic prompts use: clear of special tokens, inside any vocabulary >= 512
PROMPT_ID_LO, PROMPT_ID_HI = 10, 500
#: event-loop lag probe period (s): a tick later than this by more than the lag threshold means the
#: client itself was busy, and what it timed included its own delay
LAG_PROBE_S = 0.01
#: closed-loop pause after a failed connection, so a dead server is not hammered in a tight loop
CONNECT_BACKOFF_S = 0.05


@dataclass(frozen=True)
class LoadSpec:
    """What load to offer. ``max_requests`` and ``max_seconds`` bound every run by themselves."""

    url: str  # base URL, e.g. http://127.0.0.1:8000
    model: str  # the served model name
    mode: str = "closed"  # "closed" | "open"
    concurrency: int = 1  # closed loop: requests in flight
    rate: float = 1.0  # open loop: requests per second
    burstiness: float = 1.0  # open loop: gamma shape of the gaps (1 = Poisson)
    input_len: int = 128
    output_len: int = 128
    ignore_eos: bool = True
    timeout_s: float = 600.0  # per request
    max_requests: int = 10_000_000
    max_seconds: float = 24 * 3600.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("closed", "open"):
            raise ValueError(f"load mode must be 'closed' or 'open', not {self.mode!r}")
        if self.concurrency < 1 or self.rate <= 0 or self.burstiness <= 0:
            raise ValueError("concurrency must be >= 1, rate and burstiness > 0")


@dataclass
class RequestRecord:
    """One request as the client saw it. Times are ``time.monotonic`` seconds."""

    index: int
    t_scheduled: float  # when it should have been sent (open loop: its arrival time)
    t_send: float
    t_end: float = 0.0
    t_first: float | None = None
    chunk_times: list[float] = field(default_factory=list)  # arrival of each chunk carrying text
    prompt_tokens: int | None = None  # the server's usage report
    completion_tokens: int | None = None
    error: str | None = None  # None | "http" | "timeout" | "malformed" | "connection"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def output_tokens(self) -> int:
        """Tokens the server reports it generated; the chunk count where it sent no usage."""
        return self.completion_tokens if self.completion_tokens is not None else len(self.chunk_times)


def next_gap(rng: random.Random, rate: float, burstiness: float = 1.0) -> float:
    """Seconds to the next open-loop arrival: gamma of shape ``burstiness`` and mean ``1/rate``
    (shape 1 is the exponential gap of a Poisson process; the gaps' CV is ``1/sqrt(shape)``)."""
    return rng.gammavariate(burstiness, 1.0 / (rate * burstiness))


def prompt_ids(index: int, length: int, seed: int) -> list[int]:
    """A prompt of ``length`` token ids, different from every other index's at its first id."""
    span = PROMPT_ID_HI - PROMPT_ID_LO
    rng = random.Random(seed * 1_000_003 + index)
    head = [PROMPT_ID_LO + (index // span**k) % span for k in range(3)]  # unique for 1.2e8 requests
    return (head + [rng.randrange(PROMPT_ID_LO, PROMPT_ID_HI) for _ in range(length)])[:length]


def request_body(spec: LoadSpec, index: int) -> bytes:
    body: dict[str, Any] = {
        "model": spec.model, "prompt": prompt_ids(index, spec.input_len, spec.seed),
        "max_tokens": spec.output_len, "stream": True, "temperature": 0.0,
        "stream_options": {"include_usage": True},
    }
    if spec.ignore_eos:
        body["ignore_eos"] = True
        body["min_tokens"] = spec.output_len
    return json.dumps(body).encode()


class _Malformed(Exception):
    pass


def _parse_event(data: bytes, rec: RequestRecord, now: float) -> bool:
    """Account one SSE ``data:`` payload; returns False at ``[DONE]``."""
    if data == b"[DONE]":
        return False
    try:
        obj = json.loads(data)
        choices = obj.get("choices") or []
        usage = obj.get("usage")
    except (ValueError, AttributeError) as e:
        raise _Malformed(f"not a JSON chunk: {data[:60]!r}") from e
    if any(c.get("text") for c in choices):
        if rec.t_first is None:
            rec.t_first = now
        rec.chunk_times.append(now)
    if usage:
        rec.prompt_tokens = usage.get("prompt_tokens")
        rec.completion_tokens = usage.get("completion_tokens")
    return True


async def _stream(session: Any, spec: LoadSpec, rec: RequestRecord, body: bytes) -> None:
    """Send one request and read its event stream into ``rec``."""
    import aiohttp

    url = spec.url.rstrip("/") + "/v1/completions"
    rec.t_send = time.monotonic()
    try:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
            if resp.status != 200:
                rec.error, rec.detail = "http", f"HTTP {resp.status}"
                await resp.read()
                return
            buf = b""
            done = False
            async for piece in resp.content.iter_any():
                now = time.monotonic()
                buf += piece
                while not done:
                    cut = buf.find(b"\n\n")
                    if cut < 0:
                        break
                    event, buf = buf[:cut], buf[cut + 2:]
                    for line in event.split(b"\n"):
                        if line.startswith(b"data:"):
                            done = not _parse_event(line[5:].strip(), rec, now)
                        elif line and not line.startswith((b":", b"event:", b"id:", b"retry:")):
                            raise _Malformed(f"not an SSE line: {line[:60]!r}")
            if not done:
                raise _Malformed("stream ended without [DONE]")
    except _Malformed as e:
        rec.error, rec.detail = "malformed", str(e)
    except TimeoutError:
        rec.error, rec.detail = "timeout", f"no answer within {spec.timeout_s:g} s"
    except (aiohttp.ClientError, OSError) as e:
        rec.error, rec.detail = "connection", f"{type(e).__name__}: {e}"[:200]
    except asyncio.CancelledError:
        rec.error = "cancelled"  # stopped with the load: never ended, so no interval counts it
        raise
    finally:
        if rec.error != "cancelled":
            rec.t_end = time.monotonic()


class LoadGenerator:
    """Offers ``spec``'s load from a background thread until ``stop()`` or its bounds.

    ``records()`` is a snapshot of every request started so far (finished ones have ``t_end``);
    ``lags()`` are the event loop's measured delays (time, seconds late), so a reader can tell a
    busy client from a slow server.
    """

    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self._records: list[RequestRecord] = []
        self._lags: list[tuple[float, float]] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self.failure: BaseException | None = None
        self.in_flight = 0
        self.sent = 0

    # --- control ------------------------------------------------------------------------------
    def start(self) -> LoadGenerator:
        self._thread = threading.Thread(target=self._run, name="tokbench-loadgen", daemon=True)
        self._thread.start()
        self._started.wait(10.0)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop offering load; requests in flight are cancelled (recorded as unfinished)."""
        if self._loop is not None and self._stop is not None and self._thread and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def records(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._records)

    def prune(self, before: float) -> None:
        """Forget requests that ended, and lag probes taken, before ``before`` (keeps memory flat)."""
        with self._lock:
            self._records = [r for r in self._records if not r.t_end or r.t_end >= before]
            self._lags = [lag for lag in self._lags if lag[0] >= before]

    def lags(self) -> list[tuple[float, float]]:
        with self._lock:
            return list(self._lags)

    # --- the loop -----------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as e:  # surfaced by the workload's next step
            self.failure = e
        finally:
            self._started.set()

    async def _main(self) -> None:
        import aiohttp

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        s = self.spec
        limit = s.concurrency if s.mode == "closed" else 0
        connector = aiohttp.TCPConnector(limit=limit, force_close=False)
        timeout = aiohttp.ClientTimeout(total=s.timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            self._started.set()
            deadline = time.monotonic() + s.max_seconds
            tasks = [asyncio.create_task(self._probe())]
            if s.mode == "closed":
                tasks += [asyncio.create_task(self._worker(session, deadline)) for _ in range(s.concurrency)]
            else:
                tasks.append(asyncio.create_task(self._arrivals(session, deadline)))
            stopper = asyncio.create_task(self._stop.wait())
            work = asyncio.gather(*tasks[1:])
            await asyncio.wait([stopper, work], timeout=s.max_seconds, return_when=asyncio.FIRST_COMPLETED)
            crashed = work.exception() if work.done() and not work.cancelled() else None
            for t in [*tasks, stopper]:
                t.cancel()
            work.cancel()
            await asyncio.gather(*tasks, stopper, work, return_exceptions=True)
            if crashed is not None:
                raise crashed  # kept as ``failure``: the workload's next step reports it

    def _new_record(self, t_scheduled: float) -> RequestRecord | None:
        with self._lock:
            if self.sent >= self.spec.max_requests:
                return None
            rec = RequestRecord(self.sent, t_scheduled, time.monotonic())
            self.sent += 1
            self._records.append(rec)
        return rec

    async def _one(self, session: Any, rec: RequestRecord) -> None:
        self.in_flight += 1
        try:
            await _stream(session, self.spec, rec, request_body(self.spec, rec.index))
        finally:
            self.in_flight -= 1

    async def _worker(self, session: Any, deadline: float) -> None:
        while time.monotonic() < deadline:
            rec = self._new_record(time.monotonic())
            if rec is None:
                return
            await self._one(session, rec)
            if rec.error == "connection":
                await asyncio.sleep(CONNECT_BACKOFF_S)  # a server that is gone: do not spin

    async def _arrivals(self, session: Any, deadline: float) -> None:
        s = self.spec
        rng = random.Random(s.seed)
        t_next = time.monotonic()
        running: set[asyncio.Task] = set()
        while t_next < deadline:
            t_next += next_gap(rng, s.rate, s.burstiness)
            delay = t_next - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            rec = self._new_record(t_next)
            if rec is None:
                break
            task = asyncio.create_task(self._one(session, rec))
            running.add(task)
            task.add_done_callback(running.discard)
        await asyncio.gather(*running, return_exceptions=True)

    async def _probe(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(LAG_PROBE_S)
            late = time.monotonic() - t0 - LAG_PROBE_S
            with self._lock:
                self._lags.append((t0, max(late, 0.0)))
