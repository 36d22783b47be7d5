"""Benchmark: the fal emulator's fast mode, submit + status over keep-alive, on one core.

Starts `python -m emulator --fast` pinned to one core (`taskset -c 0`), pins this driver to
another core, and runs N concurrent loops of "submit, then one status poll" for a bounded time
and count, over loopback only. Prints figures; asserts nothing.

    .venv/bin/python bench/emulator_bench.py [--seconds 10] [--connections N]
        [--max-submits 200000] [--driver httpx|raw] [--server-cpu 0] [--driver-cpu 1]

`--driver httpx` uses httpx.AsyncClient (what the gateway uses); httpx costs more CPU per
request than the emulator, so the driver core can saturate first. `--driver raw` is a minimal
HTTP/1.1 keep-alive client on asyncio streams, to measure the server rather than the client.
The server's own CPU use is read from /proc, and "capacity" = requests / server CPU-seconds is
what one fully busy core would serve.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.emulator import EmulatorProcess, start_emulator  # noqa: E402

MODEL = "fal-ai/kling-video/video-to-audio"
PAYLOAD = {
    "video_url": "https://example.invalid/clip.mp4",
    "sound_effect_prompt": "a ball bouncing",
    "background_music_prompt": "",
}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its threads, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


class RawClient:
    """One keep-alive HTTP/1.1 connection; just enough protocol for this benchmark."""

    def __init__(self, host: str, port: int, auth: str) -> None:
        self.host, self.port, self.auth = host, port, auth
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        assert self.reader is not None and self.writer is not None
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Authorization: {self.auth}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        status = int(status_line.split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def drive(
    emu: EmulatorProcess, driver: str, connections: int, seconds: float, max_submits: int
) -> dict[str, object]:
    deadline = time.monotonic() + seconds
    counts = {"submit": 0, "status": 0, "errors": 0}
    latencies: list[float] = []
    body = json.dumps(PAYLOAD).encode()
    auth = f"Key {emu.fal_key}"
    base = emu.base_url

    async def loop_httpx(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline and counts["submit"] < max_submits:
            started = time.perf_counter()
            response = await client.post(f"{base}/{MODEL}", content=body)
            if response.status_code != 200:
                counts["errors"] += 1
                continue
            counts["submit"] += 1
            latencies.append(time.perf_counter() - started)
            status = await client.get(response.json()["status_url"])
            counts["status" if status.status_code in (200, 202) else "errors"] += 1

    async def loop_raw() -> None:
        host, port = base.removeprefix("http://").split(":")
        client = RawClient(host, int(port), auth)
        await client.connect()
        prefix = len(base)
        try:
            while time.monotonic() < deadline and counts["submit"] < max_submits:
                started = time.perf_counter()
                code, answer = await client.request("POST", f"/{MODEL}", body)
                if code != 200:
                    counts["errors"] += 1
                    continue
                counts["submit"] += 1
                latencies.append(time.perf_counter() - started)
                status_path = json.loads(answer)["status_url"][prefix:]
                code, _ = await client.request("GET", status_path)
                counts["status" if code in (200, 202) else "errors"] += 1
        finally:
            await client.close()

    assert emu.process is not None
    cpu_before = cpu_seconds(emu.process.pid)
    started = time.monotonic()
    if driver == "httpx":
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(
            headers={"Authorization": auth, "Content-Type": "application/json"},
            limits=limits,
            timeout=30,
        ) as client:
            await asyncio.gather(*(loop_httpx(client) for _ in range(connections)))
    else:
        await asyncio.gather(*(loop_raw() for _ in range(connections)))
    elapsed = time.monotonic() - started
    server_cpu = cpu_seconds(emu.process.pid) - cpu_before
    total = counts["submit"] + counts["status"]
    latencies.sort()
    return {
        "elapsed_s": elapsed,
        "submits": counts["submit"],
        "statuses": counts["status"],
        "errors": counts["errors"],
        "submits_per_s": counts["submit"] / elapsed,
        "requests_per_s": total / elapsed,
        "server_cpu_util": server_cpu / elapsed,
        "capacity_requests_per_cpu_s": total / server_cpu if server_cpu else float("nan"),
        "capacity_submits_per_cpu_s": counts["submit"] / server_cpu if server_cpu else 0.0,
        "submit_p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
        "submit_p99_ms": latencies[int(len(latencies) * 0.99)] * 1000 if latencies else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--connections",
        type=int,
        default=None,
        help="keep-alive connections [httpx: 4 (its pool slows down past that), raw: 32]",
    )
    parser.add_argument("--max-submits", type=int, default=200_000)
    parser.add_argument("--driver", choices=("httpx", "raw", "both"), default="both")
    parser.add_argument("--server-cpu", type=int, default=0)
    parser.add_argument("--driver-cpu", type=int, default=1)
    args = parser.parse_args()
    print("$", shlex.join([sys.executable, *sys.argv]))

    os.sched_setaffinity(0, {args.driver_cpu})
    with tempfile.TemporaryDirectory(prefix="emulator-bench-") as tmp:
        emu = start_emulator(
            Path(tmp) / "emu",
            fast=True,
            concurrency=64,
            cpu=args.server_cpu,
            args=["--result-ttl-s", "60", "--log-level", "error"],
        )
        print("server:", shlex.join(emu.args))
        try:
            drivers = ("httpx", "raw") if args.driver == "both" else (args.driver,)
            for driver in drivers:
                connections = args.connections or (4 if driver == "httpx" else 32)
                emu.reset()
                # Warm-up: imports, first connections, caches.
                asyncio.run(drive(emu, driver, connections, 1.0, 2_000))
                emu.reset()
                figures = asyncio.run(
                    drive(emu, driver, connections, args.seconds, args.max_submits)
                )
                print(f"\ndriver={driver} connections={connections}")
                for name, value in figures.items():
                    shown = f"{value:,.1f}" if isinstance(value, float) else f"{value:,}"
                    print(f"  {name:30s} {shown}")
        finally:
            emu.stop()
    print(f"\nload average during the run: {os.getloadavg()}")


if __name__ == "__main__":
    main()
