"""Benchmark: memory while mirroring a 100 MB fal output and while accepting a 100 MB upload;
probe time of a 20 s 1080p clip. Prints figures, asserts nothing (issue 5, "Benchmark").

    .venv/bin/python bench/media_bench.py                 # everything, about 1-3 min
    .venv/bin/python bench/media_bench.py --skip-upload   # no Postgres, no API
    .venv/bin/python bench/media_bench.py --help

1. Mirroring (in THIS process, what the worker does for an output): a 100 MiB file of random
   bytes is written into the emulator's CDN store (`<data>/files/<bucket>/<key>` + its
   `files-meta` sidecar, as `emulator/storage.py` keeps files), then
   `FalClient.download(url, path, max_bytes=512 MiB)` + `LocalStorage.put_file(...)`. Peak extra
   memory = VmHWM after minus VmRSS before (VmHWM reset through `/proc/self/clear_refs`), also
   sampled every 10 ms, and `tracemalloc`'s peak in a separate run (it slows allocation down).
   Diagnostics (download only): a no-op sink and a sink writing 1 MiB per thread hop.
2. Uploads (in the API process): `python -m app.entrypoints api` (= `foley api`) with
   FOLEY_DATABASE_URL / FOLEY_ADMIN_TOKEN / FOLEY_DATA_DIR / FOLEY_ENV=development only; a
   tenant and key through the admin API; a ~100 MiB real MP4 POSTed to `/v1/files` as a raw body
   (from a file: Content-Length; from a generator: chunked) and as multipart. "cold": each kind
   as the first upload of a freshly started API; "warm": one API, after a 20 MiB upload of each
   kind. The API's VmRSS is sampled every 10 ms from here and split at the moment the client
   has sent the last byte; its VmHWM is reset before each upload and read after.
3. Probe: `app.media.probe.probe()` on a 20 s 1920x1080 H.264 clip in a fresh process: the first
   call with the file dropped from the page cache (posix_fadvise DONTNEED), then 20 warm calls.

Generated media is cached under bench/out/media_bench/ (gitignored). Everything else lives in a
temporary directory removed at the end; every process started here is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import hashlib
import io
import json
import os
import platform
import secrets
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import gateway_bench as gb  # noqa: E402 (bench/ is on sys.path: this file runs as a script from it)

PY = sys.executable
HOST = "127.0.0.1"
MIB = 1024 * 1024
OUT = REPO / "bench" / "out" / "media_bench"
ADMIN_TOKEN = "bench-admin-" + uuid.uuid4().hex[:12]
TARGET_MIB = 32
TIME_LIMIT_S = 900  # the whole run; SIGALRM ends it (cleanly) past this

UPLOAD_VIDEO = "upload_1080p_noise_100mib.mp4"
PROBE_CLIP = "clip_20s_1080p_h264_8mbps_aac.mp4"


class BenchError(RuntimeError):
    pass


# --- /proc ------------------------------------------------------------------------------------


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem in KiB (missing ones are absent)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[name] = int(value.split()[0])
    return out


def reset_hwm(pid: int | str = "self") -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class RssSampler:
    """Samples a process's VmRSS / RssAnon every `interval` s in a thread; keeps the maxima."""

    def __init__(self, pid: int | str = "self", interval: float = 0.01) -> None:
        self.pid, self.interval = pid, interval
        self.max_rss = self.max_anon = 0
        self.samples = 0
        self.series: list[tuple[float, int]] = []  # (perf_counter, VmRSS KiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(OSError):
                s = proc_status(self.pid)
                self.max_rss = max(self.max_rss, s["VmRSS"])
                self.max_anon = max(self.max_anon, s.get("RssAnon", 0))
                self.samples += 1
                self.series.append((time.perf_counter(), s["VmRSS"]))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class MemRun:
    """One measured operation: memory in KiB relative to the baseline taken right before."""

    label: str
    seconds: float
    size: int
    base_rss: int
    base_anon: int
    peak_sampled: int  # max sampled VmRSS - base VmRSS
    peak_anon: int  # max sampled RssAnon - base RssAnon
    peak_hwm: int | None  # VmHWM after - base VmRSS (None if clear_refs is refused)
    after_rss: int  # VmRSS after - base VmRSS (what stayed)
    samples: int
    # Sampled peaks (KiB over the baseline) before / after box["mark"], when the caller set one.
    split: tuple[int, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def peak(self) -> int:
        return max(self.peak_sampled, self.peak_hwm or 0)


@contextlib.contextmanager
def measure_memory(pid: int | str, label: str) -> Iterator[dict[str, Any]]:
    """Baseline right before, VmHWM reset, 10 ms sampling during, VmHWM after."""
    box: dict[str, Any] = {}
    base = proc_status(pid)
    hwm_ok = reset_hwm(pid)
    started = time.perf_counter()
    with RssSampler(pid) as sampler:
        yield box
    seconds = time.perf_counter() - started
    after = proc_status(pid)
    split = None
    if box.get("mark") is not None:
        mark, series = box["mark"], sampler.series
        before = [rss for t, rss in series if t <= mark] or [base["VmRSS"]]
        later = [rss for t, rss in series if t > mark] + [after["VmRSS"]]
        split = (max(before) - base["VmRSS"], max(later) - base["VmRSS"])
    box["run"] = MemRun(
        label=label,
        seconds=seconds,
        size=int(box.get("size", 0)),
        base_rss=base["VmRSS"],
        base_anon=base.get("RssAnon", 0),
        peak_sampled=max(sampler.max_rss, after["VmRSS"]) - base["VmRSS"],
        peak_anon=max(sampler.max_anon, after.get("RssAnon", 0)) - base.get("RssAnon", 0),
        peak_hwm=(after["VmHWM"] - base["VmRSS"]) if hwm_ok else None,
        after_rss=after["VmRSS"] - base["VmRSS"],
        samples=sampler.samples,
        split=split,
    )


def mib(kib: int | float | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:6.1f}"


def verdict(kib: int) -> str:
    return "ok" if kib <= TARGET_MIB * 1024 else "OVER"


# --- processes ----------------------------------------------------------------------------------


@dataclass
class Procs:
    """Children this run started (stopped in `stop_all`, always, by their own pid)."""

    items: list[tuple[str, subprocess.Popen[bytes], Path]] = field(default_factory=list)
    emulators: list[Any] = field(default_factory=list)

    def spawn(self, name: str, cmd: list[str], env: dict[str, str], log: Path) -> int:
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as out:
            popen = subprocess.Popen(
                cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.items.append((name, popen, log))
        return popen.pid

    def check(self, pid: int) -> None:
        for name, popen, log in self.items:
            if popen.pid == pid and popen.poll() is not None:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
                raise BenchError(f"{name} exited with {popen.returncode}; {log}:\n{tail}")

    def stop_all(self) -> None:
        for _name, popen, _log in reversed(self.items):
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
                try:
                    popen.wait(10)
                except subprocess.TimeoutExpired:
                    popen.kill()
                    popen.wait(5)
        self.items.clear()
        for emu in self.emulators:
            with contextlib.suppress(Exception):
                emu.stop()
        self.emulators.clear()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _on_alarm(signum: int, frame: object) -> None:
    raise BenchError(f"time limit of {TIME_LIMIT_S} s reached; stopping")


# --- media (generated in a child process, cached) -----------------------------------------------


def generate_upload_video(path: Path, min_bytes: int) -> dict[str, Any]:
    """A real 1080p H.264 MP4 of at least `min_bytes`: random-noise frames (incompressible) at
    a fixed quantiser, ultrafast + zerolatency so every frame comes out at once and we stop
    exactly past the size. ~75 frames, a few seconds of encoding."""
    import av
    import numpy as np

    rng = np.random.default_rng(0)
    part = path.with_name(path.name + ".part")
    frames = total = 0
    with av.open(str(part), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1920, 1080, "yuv420p"
        stream.options = {"preset": "ultrafast", "tune": "zerolatency", "qp": "36"}
        while total < min_bytes:
            planes = rng.integers(0, 256, (1080 * 3 // 2, 1920), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
            frame.pts = frames
            frames += 1
            for packet in stream.encode(frame):
                total += packet.size
                out.mux(packet)
        for packet in stream.encode():
            total += packet.size
            out.mux(packet)
    part.replace(path)
    return {"frames": frames, "bytes": path.stat().st_size}


def generate_probe_clip(path: Path) -> dict[str, Any]:
    """What a phone hands over: 20 s, 1920x1080, 30 fps, H.264 at ~8 Mbit/s (1 s GOP) and AAC
    stereo 48 kHz, interleaved, moov at the end (FFmpeg's default). The picture is a scrolling
    block texture, so the encoder really spends the bit rate (~20 MiB); ~10 s of encoding."""
    import av
    import numpy as np

    fps, seconds, width, height, rate = 30, 20, 1920, 1080, 48_000
    rng = np.random.default_rng(1)
    blocks = rng.integers(16, 235, (height * 3 // 16 + 1, (width + 1200) // 8 + 1), np.uint8)
    texture = np.repeat(np.repeat(blocks, 8, 0), 8, 1)[: height * 3 // 2, : width + 1200]
    part = path.with_name(path.stem + ".part.mp4")
    with av.open(str(part), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.bit_rate = 8_000_000
        video.codec_context.gop_size = fps
        video.options = {"preset": "ultrafast"}
        audio = out.add_stream("aac", rate=rate)
        audio.layout = "stereo"
        sent = 0  # audio samples encoded so far
        for i in range(fps * seconds + 1):
            if i < fps * seconds:
                offset = (i * 4) % 1200
                pixels = np.ascontiguousarray(texture[:, offset : offset + width])
                frame = av.VideoFrame.from_ndarray(pixels, format="yuv420p")
                frame.pts = i
                out.mux(video.encode(frame))
            # Audio up to this frame's time, in AAC-sized frames: the file is interleaved.
            while sent < min(rate * seconds, (i + 1) * rate // fps):
                n = min(1024, rate * seconds - sent)
                t = np.arange(sent, sent + n) / rate
                tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
                chunk = av.AudioFrame.from_ndarray(np.stack([tone, tone]), "fltp", "stereo")
                chunk.sample_rate, chunk.pts = rate, sent
                out.mux(audio.encode(chunk))
                sent += n
        out.mux(video.encode(None))
        out.mux(audio.encode(None))
    part.replace(path)
    return {"bytes": path.stat().st_size}


def ensure_media(kind: str, path: Path, regenerate: bool) -> tuple[Path, str]:
    if path.exists() and not regenerate:
        return path, f"cached ({path.stat().st_size / MIB:.1f} MiB)"
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cmd = [PY, str(Path(__file__).resolve()), "_generate", kind, str(path)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=300, check=False)
    if done.returncode != 0:
        raise BenchError(f"generating {path.name} failed:\n{done.stderr.decode()[-3000:]}")
    took = time.perf_counter() - started
    note = f"generated in {took:.1f} s ({path.stat().st_size / MIB:.1f} MiB)"
    if took > 60:
        note += " -- over 60 s, cached for later runs"
    return path, note


# --- 1. mirroring -----------------------------------------------------------------------------


def put_on_emulator(emu: Any, size: int) -> tuple[str, str]:
    """Write `size` random bytes where the emulator's FileStore keeps a CDN file; its URL."""
    bucket, key = "koala", f"{secrets.token_urlsafe(12)}_output.mp4"
    path = emu.data_dir / "files" / bucket / key
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with path.open("wb") as f:
        left = size
        while left:
            chunk = os.urandom(min(MIB, left))
            digest.update(chunk)
            f.write(chunk)
            left -= len(chunk)
    meta = emu.data_dir / "files-meta" / bucket / f"{key}.json"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"content_type": "video/mp4", "file_name": key}))
    return f"{emu.base_url}/files/{bucket}/{key}", digest.hexdigest()


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process (all threads), from /proc; 0 if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


class ReadQueueProbe:
    """Diagnostic: the most bytes ever waiting in anyio's socket read queue (httpx -> httpcore ->
    anyio on asyncio/uvloop), i.e. read from the socket but not yet taken by the response.
    Wraps anyio's private `StreamProtocol.data_received`; None if that is not there."""

    def __init__(self) -> None:
        self.max_bytes: int | None = None
        self._cls: Any = None
        self._original: Any = None

    def __enter__(self) -> ReadQueueProbe:
        try:
            from anyio._backends._asyncio import StreamProtocol
        except ImportError:
            return self
        self._cls, self._original, self.max_bytes = StreamProtocol, StreamProtocol.data_received, 0
        original, probe = self._original, self

        def data_received(proto: Any, data: bytes) -> None:
            original(proto, data)
            queued = sum(len(c) for c in proto.read_queue)
            if probe.max_bytes is not None and queued > probe.max_bytes:
                probe.max_bytes = queued

        StreamProtocol.data_received = data_received  # type: ignore[method-assign]
        return self

    def reset(self) -> None:
        if self.max_bytes is not None:
            self.max_bytes = 0

    def __exit__(self, *exc: object) -> None:
        if self._cls is not None:
            self._cls.data_received = self._original


class BufferedSink:
    """Diagnostic only (not what the worker does): a ChunkSink gathering chunks to 1 MiB before
    each thread hop, the way LocalStorage.put_stream does, to size the cost of FileWriter's
    one hop per 64 KiB chunk."""

    def __init__(self, handle: Any) -> None:
        self.handle = handle
        self.buffer = bytearray()

    @classmethod
    async def open(cls, path: Path) -> BufferedSink:
        return cls(await asyncio.to_thread(path.open, "wb"))

    async def write(self, chunk: bytes) -> None:
        self.buffer += chunk
        if len(self.buffer) >= MIB:
            data, self.buffer = bytes(self.buffer), bytearray()
            await asyncio.to_thread(self.handle.write, data)

    async def close(self) -> None:
        if self.buffer:
            await asyncio.to_thread(self.handle.write, bytes(self.buffer))
        await asyncio.to_thread(self.handle.close)


async def mirror_runs(
    url: str, digest: str, work: Path, runs: int, diag_runs: int, emu_pid: int
) -> list[MemRun]:
    """`runs` plain runs, one under tracemalloc; then `diag_runs` x two diagnostics without
    put_file: a no-op sink (network + httpx only) and a sink that writes 1 MiB at a time."""
    from app.config import Settings
    from app.storage import LocalStorage
    from app.upstream.fal import FalClient, FalTimeouts, build_http_client

    max_bytes = Settings.model_fields["max_output_bytes"].default
    http = build_http_client(FalTimeouts())
    fal = FalClient("bench-fal-key", queue_url=url, rest_url=url, cdn_url=url, http=http)
    storage = LocalStorage(work / "files")
    results: list[MemRun] = []
    chunks: list[int] = []

    async def count_chunk(chunk: bytes) -> None:
        chunks.append(len(chunk))

    modes = ["plain"] * runs + ["traced"] + ["no-op sink", "1MiB sink"] * diag_runs
    queue = ReadQueueProbe()
    try:
        queue.__enter__()
        for i, mode in enumerate(modes):
            queue.reset()
            dest = work / "work" / f"video-{i}.bin"
            await asyncio.to_thread(dest.parent.mkdir, parents=True, exist_ok=True)
            key = f"jobs/bench/{i}/video.mp4"
            gc.collect()
            if mode == "traced":
                tracemalloc.start()
                tracemalloc.reset_peak()
            cpu0, emu0 = time.process_time(), cpu_of(emu_pid)
            label = f"run {i + 1}" if mode == "plain" else mode
            with measure_memory("self", label) as box:
                t0 = time.perf_counter()
                if mode == "no-op sink":
                    got = await fal.download(url, count_chunk, max_bytes=max_bytes)
                elif mode == "1MiB sink":
                    sink = await BufferedSink.open(dest)
                    got = await fal.download(url, sink.write, max_bytes=max_bytes)
                    await sink.close()
                else:
                    got = await fal.download(url, dest, max_bytes=max_bytes)
                t1, cpu1 = time.perf_counter(), time.process_time()
                if mode in ("plain", "traced"):
                    obj = await storage.put_file(key, dest, content_type="video/mp4")
                t2 = time.perf_counter()
                box["size"] = got.size
                if mode == "traced":
                    current, peak = tracemalloc.get_traced_memory()
                    box["traced"] = (current, peak, tracemalloc.get_tracemalloc_memory())
                    tracemalloc.stop()
            run: MemRun = box["run"]
            run.extra = {
                "mode": mode,
                "download_s": t1 - t0,
                "put_s": t2 - t1,
                "cpu_s": time.process_time() - cpu0,
                "dl_cpu_s": cpu1 - cpu0,
                "queued_max": queue.max_bytes,
                "emu_cpu_s": cpu_of(emu_pid) - emu0,
                "sha_ok": obj.sha256 == digest and obj.size_bytes == got.size
                if mode in ("plain", "traced")
                else "-",
            }
            if mode == "traced":
                run.extra["traced"] = box["traced"]
            if mode == "no-op sink":
                run.extra["chunks"] = list(chunks)
            results.append(run)
            await asyncio.to_thread(dest.unlink, missing_ok=True)
            await storage.delete(key)
    finally:
        queue.__exit__()
        await fal.aclose()
        await http.aclose()
    return results


def bench_mirror(args: argparse.Namespace, procs: Procs, tmp: Path) -> list[MemRun]:
    from tests.support.emulator import start_emulator

    print("\n== 1. Mirroring a 100 MiB output: FalClient.download + LocalStorage.put_file ==")
    emu = start_emulator(tmp / "emulator", seed=0)
    procs.emulators.append(emu)
    size = args.size_mib * MIB
    url, digest = put_on_emulator(emu, size)
    print(f"source    {size} random bytes in the emulator's CDN store, served at {url}")
    print(
        "sink      <tmp>/work/video-N.bin (FileWriter: .part + rename), then put_file -> "
        "<tmp>/files/jobs/bench/N/video.mp4 (sha256 + fsync); max_bytes = 512 MiB (default)"
    )
    gc.collect()
    print(f"process   VmRSS before: {mib(proc_status()['VmRSS'])} MiB (this benchmark process)")
    print(f"loop      {args.loop} (what `foley worker` runs its FalClient on)")
    work = mirror_runs(url, digest, tmp / "mirror", args.mirror_runs, 3, emu.process.pid)
    if args.loop == "uvloop":
        import uvloop

        runs = uvloop.run(work)
    else:
        runs = asyncio.run(work)
    emu.stop()
    procs.emulators.remove(emu)

    print()
    print(
        "run        | total s | download MB/s | put_file MB/s | CPU s here / emulator | "
        "peak extra RSS MiB (VmHWM / sampled / anon) | left after MiB | sha ok | read queue MiB"
    )
    for r in runs:
        dl = r.size / 1e6 / r.extra["download_s"]
        put = f"{r.size / 1e6 / r.extra['put_s']:13.0f}" if r.extra["put_s"] > 1e-3 else "-"
        queued = mib(None if r.extra["queued_max"] is None else r.extra["queued_max"] / 1024)
        print(
            f"{r.label:<10} | {r.seconds:7.2f} | {dl:13.0f} | {put:>13} | "
            f"{r.extra['cpu_s']:10.2f} / {r.extra['emu_cpu_s']:8.2f} | "
            f"{mib(r.peak_hwm)} / {mib(r.peak_sampled)} / {mib(r.peak_anon)}{'':>16} | "
            f"{mib(r.after_rss):>14} | {r.extra['sha_ok']!s:>6} | {queued}"
        )
    plain = [r for r in runs if r.extra["mode"] == "plain"]
    traced = next(r for r in runs if r.extra["mode"] == "traced")

    current, peak, overhead = traced.extra["traced"]
    worst = max(plain, key=lambda r: r.peak)
    dl_rates = [r.size / 1e6 / r.extra["download_s"] for r in plain]
    total_rates = [r.size / 1e6 / r.seconds for r in plain]
    sizes = next(r for r in runs if r.extra["mode"] == "no-op sink").extra["chunks"]
    print()
    print(
        f"tracemalloc peak   {peak / MIB:.2f} MiB of Python allocations during the traced run "
        f"(held at its end: {current / MIB:.2f} MiB; tracemalloc's own tables "
        f"{overhead / MIB:.2f} MiB)"
    )
    print(
        f"peak extra RSS     {mib(worst.peak).strip()} MiB, worst plain run ({worst.label}); "
        f"target <= {TARGET_MIB} MiB: {verdict(worst.peak)}"
    )
    print(
        f"throughput         download {statistics.median(dl_rates):.0f} MB/s, download + "
        f"put_file {statistics.median(total_rates):.0f} MB/s (medians of {len(plain)} plain "
        "runs; the emulator, this process and the disk share 2 cores)"
    )
    if sizes:
        print(
            f"chunks             response.aiter_bytes() gave {len(sizes)} chunks, mean "
            f"{statistics.mean(sizes) / 1024:.0f} KiB, max {max(sizes) / 1024:.0f} KiB: "
            "FileWriter.write: one asyncio.to_thread hop each"
        )
    queued = [r.extra["queued_max"] for r in runs if r.extra["queued_max"] is not None]
    if queued:
        print(
            f"read queue         at most {max(queued) / MIB:.2f} MiB read from the socket but not "
            "yet consumed (anyio StreamProtocol.read_queue; max over all runs)"
        )
    print(
        "download only      (medians; CPU s of this process for the download phase): "
        + ", ".join(
            f"{name} {statistics.median(r.size / 1e6 / r.extra['download_s'] for r in rs):.0f}"
            f" MB/s, {statistics.median(r.extra['dl_cpu_s'] for r in rs):.2f} CPU s"
            for name, rs in (
                ("FileWriter", plain),
                ("1 MiB-buffered sink", [r for r in runs if r.extra["mode"] == "1MiB sink"]),
                ("no-op sink", [r for r in runs if r.extra["mode"] == "no-op sink"]),
            )
        )
    )
    return runs


# --- 2. uploads -----------------------------------------------------------------------------


def wait_http(procs: Procs, pid: int, url: str, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        procs.check(pid)
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise BenchError(f"the API did not answer {url} within {timeout:.0f} s")


def tenant_key(base: str) -> str:
    import httpx

    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    r = httpx.post(f"{base}/v1/admin/tenants", json={"name": "bench"}, headers=admin, timeout=10)
    if r.status_code != 201:
        raise BenchError(f"creating the tenant: {r.status_code} {r.text}")
    r = httpx.post(
        f"{base}/v1/admin/tenants/{r.json()['id']}/keys",
        json={"name": "bench"},
        headers=admin,
        timeout=10,
    )
    if r.status_code != 201:
        raise BenchError(f"creating the key: {r.status_code} {r.text}")
    return str(r.json()["key"])


class TimedFile(io.FileIO):
    """A file that notes when it was read to the end: the client has sent the whole body."""

    eof_at: float | None = None

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        if not data and self.eof_at is None:
            self.eof_at = time.perf_counter()
        return data or b""


def _file_chunks(f: TimedFile, size: int) -> Iterator[bytes]:
    while chunk := f.read(size):
        yield chunk


def upload(client: Any, variant: str, path: Path, marks: dict[str, float | None]) -> Any:
    """POST the file once; `variant`: raw (file object: Content-Length), chunked (generator:
    Transfer-Encoding: chunked), multipart (field `file`). `marks["eof"]`: when the client read
    the last byte of the file (so had handed the whole body to the socket)."""
    with TimedFile(path, "rb") as f:
        try:
            return _post(client, variant, path, f)
        finally:
            marks["eof"] = f.eof_at


def _post(client: Any, variant: str, path: Path, f: TimedFile) -> Any:
    if variant == "multipart":
        return client.post("/v1/files", files={"file": (path.name, f, "video/mp4")})
    body = f if variant == "raw" else _file_chunks(f, 256 * 1024)
    return client.post(
        "/v1/files",
        params={"filename": path.name},
        content=body,
        headers={"Content-Type": "video/mp4"},
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def spool_dir_note(env: dict[str, str]) -> str:
    spool = Path(env.get("TMPDIR") or tempfile.gettempdir())
    fstype, best = "?", ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            mount = parts[1]
            if str(spool.resolve()).startswith(mount) and len(mount) > len(best):
                best, fstype = mount, parts[2]
    shm = " (memory! not counted in RSS)" if fstype == "tmpfs" else ""
    return f"{spool} on {fstype}{shm}"


@dataclass
class Api:
    pid: int
    base: str


def start_api(procs: Procs, db: gb.Database, tmp: Path, n: int) -> Api:
    """`foley api` (python -m app.entrypoints api) with the four settings of the brief, nothing
    else."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOLEY_") and k != "FAL_KEY"}
    env |= {
        "FOLEY_DATABASE_URL": db.url,
        "FOLEY_ADMIN_TOKEN": ADMIN_TOKEN,
        "FOLEY_DATA_DIR": str(tmp / "gateway"),
        "FOLEY_ENV": "development",
    }
    cmd = [PY, "-m", "app.entrypoints", "api", "--host", HOST, "--port", str(port)]
    pid = procs.spawn("API", cmd, env, OUT / f"api-{n}.log")
    api = Api(pid, f"http://{HOST}:{port}")
    wait_http(procs, pid, f"{api.base}/healthz")
    return api


def measured_upload(api: Api, key: str, variant: str, path: Path, label: str) -> MemRun:
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=api.base, headers=headers, timeout=120) as client:
        with measure_memory(api.pid, label) as box:
            marks: dict[str, float | None] = {}
            r = upload(client, variant, path, marks)
            box["size"] = path.stat().st_size
            box["mark"] = marks.get("eof")
    run: MemRun = box["run"]
    run.extra = {"status": r.status_code, "variant": variant}
    if r.status_code == 201:
        run.extra["sha256"] = r.json().get("sha256")
    else:
        run.extra["error"] = r.text[:300]
    return run


def bench_upload(
    args: argparse.Namespace, procs: Procs, tmp: Path, video: Path, small: Path
) -> list[MemRun]:
    print("\n== 2. Accepting a 100 MiB upload: POST /v1/files on `foley api` ==")
    sent_sha, small_sha = sha256_of(video), sha256_of(small)
    size = video.stat().st_size
    print(f"video     {video.name}: {size} bytes, sha256 {sent_sha[:12]}...")
    print(
        "api       python -m app.entrypoints api --host 127.0.0.1 --port N (= `foley api`; "
        f"uvloop + httptools); logs {OUT}/api-N.log"
    )
    print(
        "spool     multipart parts past 1 MiB go to the API's tempdir: "
        f"{spool_dir_note(dict(os.environ))}"
    )
    variants = ("raw", "chunked", "multipart")
    runs: list[MemRun] = []
    db = gb.create_database("foley_media_bench")
    try:
        # Cold: each variant as the first upload a freshly started API serves (one-time costs
        # included: python-multipart, PyAV's demuxers, the thread pool, the DB pool, ...).
        key = ""
        for n, variant in enumerate(variants, 1):
            api = start_api(procs, db, tmp, n)
            key = key or tenant_key(api.base)
            runs.append(measured_upload(api, key, variant, video, f"{variant} cold"))
            runs[-1].extra["api_rss_end"] = proc_status(api.pid)["VmRSS"]
            procs.stop_all()
        # Warm: one API; a small upload of each kind first, then rounds of the three.
        api = start_api(procs, db, tmp, len(variants) + 1)
        start_rss = proc_status(api.pid)["VmRSS"]
        for variant in ("raw", "multipart"):
            runs.append(measured_upload(api, key, variant, small, f"{variant} small"))
        for round_ in range(1, args.upload_rounds + 1):
            for variant in variants:
                time.sleep(0.3)  # let the previous request's tail settle
                procs.check(api.pid)
                runs.append(measured_upload(api, key, variant, video, f"{variant} warm {round_}"))
        end_rss = proc_status(api.pid)["VmRSS"]
    finally:
        procs.stop_all()
        gb.drop_database(db)

    print()
    print(
        "upload           | status | sha ok | total s |  MB/s | API RSS before MiB | peak extra "
        "RSS MiB (VmHWM / sampled / anon) | sampled: body / after | left after MiB | target"
    )
    for r in runs:
        small_run = r.label.endswith("small")
        r.extra["sha_ok"] = r.extra.get("sha256") == (small_sha if small_run else sent_sha)
        split = f"{mib(r.split[0]).strip()} / {mib(r.split[1]).strip()}" if r.split else "n/a"
        print(
            f"{r.label:<16} | {r.extra['status']:>6} | {r.extra['sha_ok']!s:>6} | "
            f"{r.seconds:7.2f} | {r.size / 1e6 / r.seconds:5.0f} | {mib(r.base_rss):>18} | "
            f"{mib(r.peak_hwm)} / {mib(r.peak_sampled)} / {mib(r.peak_anon)}{'':>16} | "
            f"{split:>21} | {mib(r.after_rss):>14} | {'-' if small_run else verdict(r.peak)}"
        )
        if "error" in r.extra:
            print(f"    error: {r.extra['error']}")
    print(
        f"(small = {small.name}, {small.stat().st_size / MIB:.1f} MiB: warms the warm API. "
        "body / after: sampled peak until the client had sent the last byte / from then on, "
        "i.e. the tail of storage writes, the probe and the INSERT)"
    )
    big = [r for r in runs if not r.label.endswith("small")]
    for variant in variants:
        mine = [r for r in big if r.extra["variant"] == variant]
        worst = max(r.peak for r in mine)
        print(
            f"{variant:<9} worst peak extra RSS {mib(worst).strip()} MiB over {len(mine)} "
            f"uploads (cold {mib(mine[0].peak).strip()}); target <= {TARGET_MIB} MiB: "
            f"{verdict(worst)}"
        )
    print(
        f"API RSS   warm API: {mib(start_rss).strip()} MiB after start, "
        f"{mib(end_rss).strip()} MiB after all its uploads; sampling every 10 ms "
        f"({big[0].samples} samples in '{big[0].label}')"
    )
    return runs


# --- 3. probe -----------------------------------------------------------------------------------


def probe_child(path: Path, calls: int) -> None:
    """In a fresh process: import, drop the file from the page cache, one cold call, warm calls."""
    t0 = time.perf_counter()
    from app.media.probe import probe

    import_s = time.perf_counter() - t0
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    gc.collect()
    base = proc_status()["VmRSS"]
    reset_hwm()
    t0 = time.perf_counter()
    info = probe(path)
    cold = time.perf_counter() - t0
    cold_kib = proc_status()["VmHWM"] - base
    gc.collect()
    base = proc_status()["VmRSS"]
    reset_hwm()
    warm = []
    for _ in range(calls):
        t0 = time.perf_counter()
        probe(path)
        warm.append(time.perf_counter() - t0)
    warm_kib = proc_status()["VmHWM"] - base
    video = info.video
    print(
        json.dumps(
            {
                "import_s": import_s,
                "cold_s": cold,
                "warm": warm,
                "cold_kib": cold_kib,
                "warm_kib": warm_kib,
                "container": info.container,
                "duration_s": info.duration_s,
                "size": info.size_bytes,
                "video": f"{video.codec} {video.width}x{video.height} {video.fps} fps"
                if video
                else None,
                "audio": f"{info.audio.codec} {info.audio.sample_rate} Hz" if info.audio else None,
            }
        )
    )


def bench_probe(args: argparse.Namespace, clips: Sequence[tuple[str, Path]]) -> None:
    print("\n== 3. probe() time (fresh process; first call after posix_fadvise DONTNEED) ==")
    print(
        "file                              | import s | cold ms | warm median ms (min-max, n) | "
        "peak extra RSS MiB cold / warm"
    )
    for label, path in clips:
        cmd = [PY, str(Path(__file__).resolve()), "_probe", str(path), str(args.probe_calls)]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=120, check=False)
        if done.returncode != 0:
            print(f"{label}: probe failed:\n{done.stderr.decode()[-2000:]}")
            continue
        res = json.loads(done.stdout.decode().strip().splitlines()[-1])
        warm = res["warm"]
        media = (
            f"{res['container']} {res['duration_s']:.2f} s, {res['video']}"
            f"{', ' + res['audio'] if res['audio'] else ''}, {res['size'] / MIB:.1f} MiB"
        )
        print(
            f"{label:<33} | {res['import_s']:8.2f} | {res['cold_s'] * 1000:7.1f} | "
            f"{statistics.median(warm) * 1000:6.2f} ({min(warm) * 1000:.2f}-"
            f"{max(warm) * 1000:.2f}, {len(warm)}) | {mib(res['cold_kib']).strip()} / "
            f"{mib(res['warm_kib']).strip()}"
        )
        print(f"{'':<33}   {media}")
    print(
        "(import s: `from app.media.probe import probe` in a fresh interpreter; cold: its first "
        "call, the file dropped from the page cache; warm: the next calls)"
    )


# --- main -----------------------------------------------------------------------------------


def machine_notes() -> list[str]:
    import av
    import httpx
    import starlette
    import uvicorn

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return [
        f"machine   {os.cpu_count()} cores ({model or platform.processor()}), "
        f"{platform.system()} {platform.release()}, load average {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f} at start",
        f"python    {platform.python_version()}; PyAV {av.__version__} (FFmpeg "
        f"{'.'.join(map(str, av.library_versions['libavformat']))} libavformat), starlette "
        f"{starlette.__version__}, uvicorn {uvicorn.__version__}, httpx {httpx.__version__}",
    ]


def tree_note() -> str:
    """Which code is measured: the commit, and whether app/ etc. differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "app", "emulator", "migrations"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return f"code      {REPO} (not a git checkout)"
    state = (
        f"{len(dirty)} uncommitted change(s) under app/ emulator/ migrations/"
        if dirty
        else ("clean")
    )
    return f"code      {REPO} at {head}, {state}"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size-mib", type=int, default=100, help="mirrored output size (100)")
    p.add_argument("--mirror-runs", type=int, default=3, help="untraced mirroring runs (3)")
    p.add_argument("--upload-rounds", type=int, default=2, help="rounds of raw/chunked/multipart")
    p.add_argument("--probe-calls", type=int, default=20, help="warm probe calls (20)")
    p.add_argument("--skip-mirror", action="store_true")
    p.add_argument("--skip-upload", action="store_true")
    p.add_argument("--skip-probe", action="store_true")
    p.add_argument("--regenerate", action="store_true", help="re-encode the cached media")
    p.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop of the mirroring runs (asyncio: `foley worker` at a0cf20b)",
    )
    return p.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["_generate"]:
        kind, path = argv[1], Path(argv[2])
        info = (
            generate_upload_video(path, 100 * MIB)
            if kind == "upload"
            else generate_probe_clip(path)
        )
        print(json.dumps(info))
        return 0
    if argv[:1] == ["_probe"]:
        probe_child(Path(argv[1]), int(argv[2]))
        return 0

    args = parse_args(argv)
    from app.logging import configure_logging

    configure_logging("WARNING")  # the FalClient's per-call info lines are not figures
    print("command   cd " + shlex.quote(os.getcwd()) + " && " + shlex.join([PY, *sys.argv]))
    for note in machine_notes():
        print(note)
    print(tree_note())
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(TIME_LIMIT_S)
    procs = Procs()
    tmp = Path(tempfile.mkdtemp(prefix="foley-media-bench-"))
    try:
        if not args.skip_mirror:
            bench_mirror(args, procs, tmp)
        if not (args.skip_upload and args.skip_probe):
            print("\nmedia     (cached under bench/out/media_bench/, gitignored)")
            video, note = ensure_media("upload", OUT / UPLOAD_VIDEO, args.regenerate)
            print(f"  {video.name}: {note}")
            clip, note = ensure_media("probe", OUT / PROBE_CLIP, args.regenerate)
            print(f"  {clip.name}: {note}")
        if not args.skip_upload:
            bench_upload(args, procs, tmp, video, clip)
        if not args.skip_probe:
            bench_probe(args, [(PROBE_CLIP, clip), (UPLOAD_VIDEO, video)])
    finally:
        signal.alarm(0)
        procs.stop_all()
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
