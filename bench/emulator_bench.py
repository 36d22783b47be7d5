"""Emulator benchmark: the fal emulator's fast mode, submit + status over keep-alive, on one core.

    .venv/bin/python bench/emulator_bench.py [--seconds 10] [--connections N]
        [--max-submits 200000] [--driver httpx|raw|both] [--server-cpu 0] [--driver-cpu 1]

Starts `python -m emulator --fast` pinned to one core and runs N concurrent loops of "submit,
then one status poll" from this process, pinned to another core, for a bounded time and count.
`--driver httpx` uses httpx.AsyncClient (what the gateway uses; it costs more CPU per request
than the emulator, so the driver's core can saturate first); `--driver raw` the harness's raw
HTTP/1.1 keep-alive connection, to measure the server rather than the client. "capacity" =
requests / the server's CPU seconds (from /proc): what one fully busy core would serve.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from harness import fal, report
from harness.load import RawConnection, encode
from harness.meters import cpu_of
from harness.run import Run, parse, parser

MODEL = "fal-ai/kling-video/video-to-audio"
PAYLOAD = {
    "video_url": "https://example.invalid/clip.mp4",
    "sound_effect_prompt": "a ball bouncing",
    "background_music_prompt": "",
}


async def drive(emu: Any, driver: str, connections: int, seconds: float, limit: int) -> dict:
    """`connections` loops of submit + status until `seconds` or `limit` submits."""
    import httpx

    deadline = time.monotonic() + seconds
    counts = {"submit": 0, "status": 0, "errors": 0}
    latencies: list[float] = []
    body = json.dumps(PAYLOAD).encode()
    auth = {"Authorization": f"Key {emu.fal_key}"}

    async def loop(request: Any) -> None:
        while time.monotonic() < deadline and counts["submit"] < limit:
            started = time.perf_counter()
            code, answer = await request("POST", f"/{MODEL}", body)
            if code != 200:
                counts["errors"] += 1
                continue
            counts["submit"] += 1
            latencies.append(time.perf_counter() - started)
            code, _ = await request("GET", json.loads(answer)["status_url"][len(emu.base_url) :])
            counts["status" if code in (200, 202) else "errors"] += 1

    def raw_request() -> Any:
        conn = RawConnection("127.0.0.1", emu.port)

        async def request(method: str, path: str, data: bytes = b"") -> tuple[int, bytes]:
            return await conn.send(encode(method, "127.0.0.1", emu.port, path, auth, data))

        return request

    cpu_before, started = cpu_of(emu.process.pid), time.monotonic()
    if driver == "httpx":
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        headers = {**auth, "Content-Type": "application/json"}
        async with httpx.AsyncClient(
            base_url=emu.base_url, headers=headers, limits=limits, timeout=30
        ) as client:

            async def request(method: str, path: str, data: bytes = b"") -> tuple[int, bytes]:
                r = await client.request(method, path, content=data)
                return r.status_code, r.content

            await asyncio.gather(*(loop(request) for _ in range(connections)))
    else:
        await asyncio.gather(*(loop(raw_request()) for _ in range(connections)))
    elapsed = time.monotonic() - started
    server_cpu = cpu_of(emu.process.pid) - cpu_before
    total = counts["submit"] + counts["status"]
    latencies.sort()
    return {
        **counts,
        "elapsed_s": elapsed,
        "submits/s": counts["submit"] / elapsed,
        "requests/s": total / elapsed,
        "server CPU": server_cpu / elapsed,
        "requests per CPU s": total / server_cpu if server_cpu else float("nan"),
        "submits per CPU s": counts["submit"] / server_cpu if server_cpu else 0.0,
        "submit p50 ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "submit p99 ms": report.pct(latencies, 99) * 1000 if latencies else float("nan"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = parser("emulator_bench", __doc__)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument(
        "--connections",
        type=int,
        default=None,
        help="keep-alive connections [httpx: 4 (its pool slows down past that), raw: 32]",
    )
    p.add_argument("--max-submits", type=int, default=200_000)
    p.add_argument("--driver", choices=("httpx", "raw", "both"), default="both")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--driver-cpu", type=int, default=1)
    args = parse(p, argv)
    with Run("emulator_bench", args, versions=("uvicorn", "httpx")) as run:
        pin = args.server_core is not None
        if pin:
            os.sched_setaffinity(0, {args.driver_cpu})
        emu = fal.start_emulator(
            run.procs,
            run.tmp / "emu",
            concurrency=64,
            cpu=args.server_cpu if pin else None,
            args=["--result-ttl-s", "60", "--log-level", "error"],
        )
        print(f"server    {' '.join(emu.args)}")
        table = report.Table(
            *(("driver", "<6"), ("conns", "d"), ("submits", ",d"), ("statuses", ",d")),
            *(("errors", "d"), ("seconds", ".1f"), ("submits/s", ",.0f"), ("requests/s", ",.0f")),
            *(("server CPU", ".0%"), ("requests per CPU s", ",.0f")),
            *(("submits per CPU s", ",.0f"), ("submit p50 ms", ".2f"), ("submit p99 ms", ".2f")),
        )
        for driver in ("httpx", "raw") if args.driver == "both" else (args.driver,):
            connections = args.connections or (4 if driver == "httpx" else 32)
            emu.reset()
            asyncio.run(drive(emu, driver, connections, 1.0, 2_000))  # imports, connections
            emu.reset()
            f = asyncio.run(drive(emu, driver, connections, args.seconds, args.max_submits))
            table.row(
                *(driver, connections, f["submit"], f["status"], f["errors"], f["elapsed_s"]),
                *(f["submits/s"], f["requests/s"], f["server CPU"], f["requests per CPU s"]),
                *(f["submits per CPU s"], f["submit p50 ms"], f["submit p99 ms"]),
            )
    return run.exit_code


if __name__ == "__main__":
    sys.exit(main())
