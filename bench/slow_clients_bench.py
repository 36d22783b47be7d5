"""Slow clients: what 200 connections that never finish their request cost the API, and how
long they hold it.

    .venv/bin/python bench/slow_clients_bench.py              # 100 heads + 100 bodies, ~45 s
    .venv/bin/python bench/slow_clients_bench.py --clients 400 --head-timeout 2 --body-timeout 3

Setup: a fresh database, ONE `foley api` process (the protocol it serves with: the head and body
deadlines of FOLEY_HTTP_HEAD_TIMEOUT / FOLEY_HTTP_BODY_TIMEOUT, given here), no worker. Half
the clients send a request line and one header, then nothing (a head never finished); the other
half send a whole head of `POST /v1/jobs` with `Content-Length: 1000` and 10 bytes of it (a
body that stalls). Measured from /proc: the API's open files before, at the peak, and once the
deadlines have passed (the database connections the slow requests' key lookups opened stay in
the pool); when the last slow connection was closed by the server and what it was answered; the
latency of a prompt client's `GET /v1/jobs` (a database read) while the slow ones are held.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import httpx
from harness.gateway import Api, gateway_env
from harness.procs import HOST, BenchError
from harness.run import Run, parse, parser


def open_files(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def slow_client(port: int, kind: str, key: str) -> tuple[float, bytes]:
    """Connects, sends part of a request, waits for the server to close; returns when it closed
    (seconds from the start) and what the server answered before closing."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection(HOST, port)
    if kind == "head":
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    else:
        writer.write(
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
            + key.encode()
            + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            + b'{"model": '
        )
    await writer.drain()
    answer = await reader.read()  # until the server closes
    writer.close()
    return time.monotonic() - started, answer.partition(b"\r\n")[0]


async def measure(api: Api, clients: int, key: str, deadline_s: float) -> dict[str, object]:
    pid = api.pid
    before = open_files(pid)
    kinds = ["head" if i % 2 == 0 else "body" for i in range(clients)]
    tasks = [asyncio.create_task(slow_client(api.port, kind, key)) for kind in kinds]
    peak = before
    prompt: list[float] = []
    async with httpx.AsyncClient(base_url=api.base, timeout=10) as client:
        while not all(t.done() for t in tasks):
            peak = max(peak, open_files(pid))
            t0 = time.perf_counter()
            r = await client.get("/v1/jobs", headers={"Authorization": f"Bearer {key}"})
            prompt.append(time.perf_counter() - t0)
            if r.status_code != 200:
                raise BenchError(f"/v1/jobs answered {r.status_code} while slow clients were held")
            await asyncio.sleep(0.1)  # a sample every 100 ms while the slow ones are held
            if prompt and len(prompt) * 0.1 > deadline_s + 30:
                raise BenchError("slow clients still connected 30 s past the deadlines")
        after = open_files(pid)
    results = [t.result() for t in tasks]
    heads = [r for r, kind in zip(results, kinds, strict=True) if kind == "head"]
    bodies = [r for r, kind in zip(results, kinds, strict=True) if kind == "body"]
    return {
        "before": before,
        "peak": peak,
        "after": after,
        "head_closed_s": max(s for s, _ in heads),
        "body_closed_s": max(s for s, _ in bodies),
        "head_answers": sorted({a.decode() or "(closed)" for _, a in heads}),
        "body_answers": sorted({a.decode() or "(closed)" for _, a in bodies}),
        "prompt_p50_ms": statistics.median(prompt) * 1000,
        "prompt_max_ms": max(prompt) * 1000,
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("slow_clients_bench", __doc__)
    g = p.add_argument_group("slow clients")
    g.add_argument("--clients", type=int, default=200, help="slow connections, half each [200]")
    g.add_argument("--head-timeout", type=float, default=10.0, help="seconds [10: the default]")
    g.add_argument("--body-timeout", type=float, default=30.0, help="seconds [30: the default]")
    args = parse(p, argv)
    with Run("slow_clients_bench", args) as run:
        db = run.database()
        env = gateway_env(
            db,
            Path(run.tmp) / "data",
            FOLEY_HTTP_HEAD_TIMEOUT=f"{args.head_timeout}s",
            FOLEY_HTTP_BODY_TIMEOUT=f"{args.body_timeout}s",
        )
        api = Api(run.procs, env, run.out_dir, cli=True).start(args.server_core)
        tenant = api.new_tenant("slow")
        deadline = max(args.head_timeout, args.body_timeout)
        m = asyncio.run(measure(api, args.clients, tenant.key, deadline))
        print(
            f"\n{args.clients} slow clients (half heads, half bodies), deadlines: head "
            f"{args.head_timeout:g} s, body {args.body_timeout:g} s"
        )
        print(f"   API open files: before {m['before']}, peak {m['peak']}, after {m['after']}")
        print(
            f"   last head dribbler closed at {m['head_closed_s']:.1f} s, answered "
            f"{m['head_answers']}"
        )
        print(
            f"   last body staller closed at {m['body_closed_s']:.1f} s, answered "
            f"{m['body_answers']}"
        )
        print(
            f"   a prompt client's GET /v1/jobs meanwhile: p50 {m['prompt_p50_ms']:.1f} ms, "
            f"max {m['prompt_max_ms']:.1f} ms"
        )
    return run.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
