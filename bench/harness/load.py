"""Load generators, each run in a process of its own (`run_load`): a closed loop (every
connection sends its next request when the last one is answered) or a steady rate (request i
leaves at t0 + i / rate whatever happened to the others).

The client is a raw asyncio HTTP/1.1 keep-alive connection with pre-encoded requests and
Content-Length framing: httpx as the load generator was the bottleneck (~57 % of its core at
~117 req/s, against 5-10 % at 700-1900 req/s for the raw client). `client="httpx"` keeps it for
comparison. This module imports only the standard library (and uvloop, httpx when there).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from harness.meters import self_cpu
from harness.procs import HOST, PY, REPO, BenchError, taskset
from harness.report import pct


@dataclass
class LoadSpec:
    port: int
    body: dict[str, Any]
    # one set of headers per connection, round robin (e.g. one tenant's key each)
    headers_list: list[dict[str, str]] = field(default_factory=lambda: [{}])
    mode: str = "closed"  # or "rate"
    concurrency: int = 32  # connections
    warmup_s: float = 2.0
    duration_s: float = 8.0
    max_requests: int = 20_000  # closed loop: measured requests at most
    rate: float = 10.0  # steady rate: requests per second
    request_timeout_s: float | None = None  # an answer later than this is an error (status 0)
    client: str = "raw"  # or "httpx"
    path: str = "/v1/jobs"
    ok_status: int = 202
    host: str = HOST
    # mode "alternate": a second server (its port, its headers) loaded in turn with the first,
    # `slice_s` each, `concurrency` connections to each; see `alternate`.
    other_port: int | None = None
    other_headers_list: list[dict[str, str]] = field(default_factory=lambda: [{}])
    slice_s: float = 0.25


class HttpError(Exception):
    pass


class RawConnection:
    """One keep-alive HTTP/1.1 connection; requests are pre-encoded bytes.

    uvicorn closes a connection idle for 5 s (its keep-alive timeout); one idle for
    `REOPEN_IDLE_S` is replaced before use, so a request is never sent on a connection the server
    may be closing (a POST is never retried)."""

    REOPEN_IDLE_S = 2.0

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    async def send(self, request: bytes) -> tuple[int, bytes]:
        if self.writer is None or time.monotonic() - self.last_used > self.REOPEN_IDLE_S:
            self.close()
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None and self.writer is not None
        try:
            self.writer.write(request)
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            status = int(lines[0].split(b" ", 2)[1])
            length = None
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
                    break
            if length is None:
                raise HttpError(f"no Content-Length in the answer: {head!r}")
            body = await self.reader.readexactly(length) if length else b""
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.close()  # the next request opens a new connection
            raise HttpError(f"connection lost: {exc!r}") from exc
        self.last_used = time.monotonic()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


class HttpxConnection:
    """The same interface over one shared httpx.AsyncClient (for comparing client overhead)."""

    def __init__(self, client: Any, spec: LoadSpec, headers: dict[str, str]) -> None:
        self.client, self.body = client, json.dumps(spec.body).encode()
        self.url = f"http://{spec.host}:{spec.port}{spec.path}"
        self.headers = {**headers, "Content-Type": "application/json"}

    async def send(self, _request: bytes) -> tuple[int, bytes]:
        import httpx

        try:
            r = await self.client.post(self.url, content=self.body, headers=self.headers)
        except httpx.HTTPError as exc:
            raise HttpError(f"httpx: {exc!r}") from exc
        return r.status_code, r.content

    def close(self) -> None:
        pass


def encode(
    method: str, host: str, port: int, path: str, headers: dict[str, str], body: bytes
) -> bytes:
    """One HTTP/1.1 request as bytes, JSON body framed by Content-Length."""
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def encode_request(spec: LoadSpec, headers: dict[str, str]) -> bytes:
    body = json.dumps(spec.body).encode()
    return encode("POST", spec.host, spec.port, spec.path, headers, body)


class Connections:
    """`spec.concurrency` connections, connection i with headers i mod len(headers_list)."""

    def __init__(self, spec: LoadSpec) -> None:
        self.httpx: Any = None
        n, headers = spec.concurrency, spec.headers_list
        self.requests = [encode_request(spec, headers[i % len(headers)]) for i in range(n)]
        if spec.client == "httpx":
            import httpx

            limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
            self.httpx = httpx.AsyncClient(limits=limits, timeout=30)
            self.conns: list[Any] = [
                HttpxConnection(self.httpx, spec, headers[i % len(headers)]) for i in range(n)
            ]
        else:
            self.conns = [RawConnection(spec.host, spec.port) for _ in range(n)]

    async def aclose(self) -> None:
        for c in self.conns:
            c.close()
        if self.httpx is not None:
            await self.httpx.aclose()


async def _send(conn: Any, request: bytes, limit_s: float | None) -> tuple[int, bytes]:
    try:
        return await asyncio.wait_for(conn.send(request), limit_s)
    except TimeoutError:  # bounded: a stuck server does not hang the run
        conn.close()
        return 0, f"no answer in {limit_s:g} s".encode()
    except HttpError as exc:
        return 0, str(exc).encode()


async def closed_loop(spec: LoadSpec) -> dict[str, Any]:
    """An error counts even if sent in the warm-up; a connection whose request got no answer
    stops (no pile-up on a stuck server)."""
    pool = Connections(spec)
    warm_end = time.perf_counter() + spec.warmup_s
    end = warm_end + spec.duration_s
    state: dict[str, Any] = {"answered": 0, "sent": 0, "ok": 0, "errors": 0, "max_s": 0.0}
    state["first_error"] = None
    statuses: dict[str, int] = {}
    lat: list[float] = []

    async def run(conn: Any, request: bytes) -> None:
        while True:
            now = time.perf_counter()
            if now >= end or (now >= warm_end and state["sent"] >= spec.max_requests):
                return
            t0 = time.perf_counter()
            status, answer = await _send(conn, request, spec.request_timeout_s)
            t1 = time.perf_counter()
            state["max_s"] = max(state["max_s"], t1 - t0)
            state["answered"] += 1
            if status != spec.ok_status or t0 >= warm_end:
                state["sent"] += 1
                statuses[str(status)] = statuses.get(str(status), 0) + 1
            if status == spec.ok_status:
                if t0 >= warm_end:
                    state["ok"] += 1
                    lat.append(t1 - t0)
                continue
            state["errors"] += 1
            state["first_error"] = state["first_error"] or f"{status} {answer[:300]!r}"
            if status == 0 and spec.request_timeout_s is not None:
                return

    tasks = [asyncio.create_task(run(c, r)) for c, r in zip(pool.conns, pool.requests, strict=True)]
    await asyncio.sleep(max(0.0, warm_end - time.perf_counter()))
    cpu0, t_measure = self_cpu(), time.perf_counter()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t_measure
    cpu = self_cpu() - cpu0
    await pool.aclose()
    lat.sort()
    return {
        **state,
        "statuses": statuses,
        "elapsed_s": elapsed,
        "rps": state["ok"] / elapsed if elapsed > 0 else 0.0,
        "client_cpu": cpu / elapsed if elapsed > 0 else 0.0,
        "lat_p50_ms": pct(lat, 50) * 1000 if lat else None,
        "lat_p99_ms": pct(lat, 99) * 1000 if lat else None,
    }


async def alternate(spec: LoadSpec) -> dict[str, Any]:
    """Two servers (`port`, `other_port`) under a closed loop in turn, `slice_s` each: the
    connections of the server whose turn it is send, the others wait. Both meet the machine of
    the same second, so the ratio of their throughputs holds still where rounds seconds apart
    do not. A request counts for its server when it was sent in that server's turn after the
    warm-up; each server had half the measured time. Answers `sides`: each server's result."""
    assert spec.other_port is not None
    pools = [
        Connections(spec),
        Connections(replace(spec, port=spec.other_port, headers_list=spec.other_headers_list)),
    ]
    turns = [asyncio.Event(), asyncio.Event()]
    turns[0].set()
    warm_end = time.perf_counter() + spec.warmup_s
    end = warm_end + spec.duration_s
    sides: list[dict[str, Any]] = [
        {"ok": 0, "errors": 0, "first_error": None, "lat": [], "statuses": {}} for _ in pools
    ]

    async def run(side: int, conn: Any, request: bytes) -> None:
        state = sides[side]
        while True:
            await turns[side].wait()
            t0 = time.perf_counter()
            if t0 >= end:
                return
            status, answer = await _send(conn, request, spec.request_timeout_s)
            t1 = time.perf_counter()
            if t0 < warm_end:
                continue
            state["statuses"][str(status)] = state["statuses"].get(str(status), 0) + 1
            if status == spec.ok_status:
                state["ok"] += 1
                state["lat"].append(t1 - t0)
                continue
            state["errors"] += 1
            state["first_error"] = state["first_error"] or f"{status} {answer[:300]!r}"
            if status == 0 and spec.request_timeout_s is not None:
                return

    async def turner() -> None:
        side = 0
        while time.perf_counter() < end:
            await asyncio.sleep(spec.slice_s)
            turns[side].clear()
            side = 1 - side
            turns[side].set()
        for turn in turns:
            turn.set()  # everyone sees the end

    tasks = [
        asyncio.create_task(run(side, c, r))
        for side, pool in enumerate(pools)
        for c, r in zip(pool.conns, pool.requests, strict=True)
    ]
    tasks.append(asyncio.create_task(turner()))
    await asyncio.sleep(max(0.0, warm_end - time.perf_counter()))
    cpu0, t_measure = self_cpu(), time.perf_counter()
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t_measure
    cpu = self_cpu() - cpu0
    for pool in pools:
        await pool.aclose()
    results = []
    for state in sides:
        lat = sorted(state.pop("lat"))
        results.append(
            {
                **state,
                "answered": state["ok"] + state["errors"],
                "rps": state["ok"] / (elapsed / 2) if elapsed > 0 else 0.0,
                "lat_p50_ms": pct(lat, 50) * 1000 if lat else None,
                "lat_p99_ms": pct(lat, 99) * 1000 if lat else None,
            }
        )
    return {
        "sides": results,
        "elapsed_s": elapsed,
        "client_cpu": cpu / elapsed if elapsed > 0 else 0.0,
    }


async def steady_rate(spec: LoadSpec) -> dict[str, Any]:
    """Every accepted request: its answer's id, the wall clock when the answer was fully read
    (`at`), the answer time, and whether it left during the warm-up."""
    total = int(spec.rate * (spec.warmup_s + spec.duration_s))
    warm_count = int(spec.rate * spec.warmup_s)
    pool = Connections(spec)
    free: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(pool.conns)):
        free.put_nowait(i)
    accepted: list[dict[str, Any]] = []
    errors: list[str] = []
    late = 0

    async def one(i: int) -> None:
        c = await free.get()
        try:
            t0 = time.perf_counter()
            status, body = await _send(pool.conns[c], pool.requests[c], spec.request_timeout_s)
            wall = time.time()  # the answer as the client sees it: read to its end
            t1 = time.perf_counter()
        finally:
            free.put_nowait(c)
        if status != spec.ok_status:
            errors.append(f"{status} {body[:300]!r}")
            return
        answer = json.loads(body)
        accepted.append({"id": answer["id"], "at": wall, "s": t1 - t0, "warmup": i < warm_count})

    tasks = []
    cpu0 = self_cpu()
    t_start = time.perf_counter()
    for i in range(total):
        delay = t_start + i / spec.rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.005:
            late += 1
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t_start
    await pool.aclose()
    return {
        "accepted": accepted,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "sent": total,
        "elapsed_s": elapsed,
        "late_sends": late,
        "client_cpu": (self_cpu() - cpu0) / elapsed if elapsed > 0 else 0.0,
    }


def run_load(spec: LoadSpec, core: int | None = None, timeout: float | None = None) -> dict:
    """Run `spec` in a process of its own (pinned to `core`); its result."""
    timeout = timeout or spec.warmup_s + spec.duration_s + 2 * (spec.request_timeout_s or 0) + 60
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "bench"), str(REPO)])}
    cmd = [*taskset(core), PY, "-m", "harness.load", json.dumps(asdict(spec))]
    try:
        done = subprocess.run(
            cmd, cwd=REPO, env=env, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:  # run() has killed it
        raise BenchError(f"the load generator did not finish within {timeout:.0f} s") from exc
    if done.returncode != 0:
        raise BenchError(
            f"load generator failed ({done.returncode}):\n"
            f"{done.stderr.decode(errors='replace')[-3000:]}"
        )
    result: dict[str, Any] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


def main(spec_json: str) -> None:
    spec = LoadSpec(**json.loads(spec_json))
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    modes = {"closed": closed_loop, "rate": steady_rate, "alternate": alternate}
    result = asyncio.run(modes[spec.mode](spec))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
