"""Media benchmark: memory while mirroring a 100 MB fal output and while accepting a 100 MB
upload; probe time of a 20 s 1080p clip. Prints figures, asserts nothing.

    .venv/bin/python bench/media_bench.py                 # everything, about 1-3 min
    .venv/bin/python bench/media_bench.py --skip-upload   # no Postgres, no API
    .venv/bin/python bench/media_bench.py --help

1. Mirroring (in THIS process, what the worker does for an output): random bytes written into
   the emulator's CDN store, then `FalClient.download` + `LocalStorage.put_file`; peak extra
   memory from VmHWM (reset through clear_refs) and 10 ms samples, `tracemalloc` in a run of
   its own; diagnostics: a no-op sink, a sink writing 1 MiB per thread hop.
2. Uploads (in the API process, `foley api`): a ~100 MiB MP4 to `POST /v1/files` raw, chunked
   and multipart, each "cold" (a fresh API's first upload) and "warm"; the API's VmRSS sampled
   every 10 ms and split at the moment the client has sent the last byte.
3. Probe: `app.media.probe.probe()` in a fresh process, cold (page cache dropped) then warm.
Generated media is cached in the out directory (gitignored). See bench/README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import io
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import fal, report
from harness.gateway import Api, gateway_env
from harness.meters import RssSampler, cpu_of, proc_status, reset_hwm
from harness.procs import PY, REPO, BenchError
from harness.run import Run, parse, parser

MIB = 1024 * 1024
TARGET_MIB = 32
TIME_LIMIT_S = 900  # the whole run; SIGALRM ends it (cleanly) past this
UPLOAD_VIDEO = "upload_1080p_noise_100mib.mp4"
PROBE_CLIP = "clip_20s_1080p_h264_8mbps_aac.mp4"
VERSIONS = ("av", "starlette", "uvicorn", "httpx")


@dataclass
class MemRun:
    """One measured operation: memory in KiB relative to the RSS right before it."""

    label: str
    seconds: float
    size: int
    base_rss: int
    peak_sampled: int  # max sampled VmRSS - base VmRSS
    peak_anon: int  # max sampled RssAnon - base RssAnon
    peak_hwm: int | None  # VmHWM after - base VmRSS (None if clear_refs is refused)
    after_rss: int  # VmRSS after - base VmRSS (what stayed)
    samples: int
    split: tuple[int, int] | None = None  # sampled peaks before / after box["mark"], if set
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def peak(self) -> int:
        return max(self.peak_sampled, self.peak_hwm or 0)


@contextlib.contextmanager
def measure_memory(pid: int | str, label: str) -> Iterator[dict[str, Any]]:
    """VmHWM reset, the RSS right before as the base, 10 ms sampling during, VmHWM after; the
    MemRun is left in box["run"]."""
    box: dict[str, Any] = {}
    hwm_ok = reset_hwm(pid)
    started = time.perf_counter()
    with RssSampler(pid) as s:
        yield box
    base = s.before["VmRSS"]
    split = None
    if box.get("mark") is not None:
        split = (s.peak(until=box["mark"]) - base, s.peak_after(box["mark"]) - base)
    box["run"] = MemRun(
        label=label,
        seconds=time.perf_counter() - started,
        size=int(box.get("size", 0)),
        base_rss=base,
        peak_sampled=s.peak() - base,
        peak_anon=s.peak("RssAnon") - s.before.get("RssAnon", 0),
        peak_hwm=(s.after["VmHWM"] - base) if hwm_ok else None,
        after_rss=s.after["VmRSS"] - base,
        samples=len(s.series),
        split=split,
    )


def mib(kib: float | None) -> str:
    return "n/a" if kib is None else f"{kib / 1024:.1f}"


def verdict(kib: int) -> str:
    return "ok" if kib <= TARGET_MIB * 1024 else "OVER"


def peaks(r: MemRun) -> str:
    """Peak extra memory: VmHWM / sampled VmRSS / sampled RssAnon, MiB."""
    return f"{mib(r.peak_hwm)} / {mib(r.peak_sampled)} / {mib(r.peak_anon)}"


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


def ensure_media(kind: str, path: Path, regenerate: bool) -> Path:
    if path.exists() and not regenerate:
        print(f"  {path.name}: cached ({path.stat().st_size / MIB:.1f} MiB)")
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cmd = [PY, str(Path(__file__).resolve()), "_generate", kind, str(path)]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=300, check=False)
    if done.returncode != 0:
        raise BenchError(f"generating {path.name} failed:\n{done.stderr.decode()[-3000:]}")
    took = time.perf_counter() - started
    note = " -- over 60 s, cached for later runs" if took > 60 else ""
    print(f"  {path.name}: generated in {took:.1f} s ({path.stat().st_size / MIB:.1f} MiB){note}")
    return path


# --- 1. mirroring -------------------------------------------------------------------------------


def put_on_emulator(emu: Any, size: int) -> tuple[str, str]:
    """Write `size` random bytes where the emulator keeps a CDN file (`files/<bucket>/<key>` and
    its `files-meta` sidecar, docs/emulator.md); its URL and SHA-256."""
    bucket, key = "koala", f"{secrets.token_urlsafe(12)}_output.mp4"
    path = emu.data_dir / "files" / bucket / key
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with path.open("wb") as f:
        for left in range(size, 0, -MIB):
            chunk = os.urandom(min(MIB, left))
            digest.update(chunk)
            f.write(chunk)
    meta = emu.data_dir / "files-meta" / bucket / f"{key}.json"
    meta.parent.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps({"content_type": "video/mp4", "file_name": key}))
    return f"{emu.base_url}/files/{bucket}/{key}", digest.hexdigest()


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


async def mirror_runs(url: str, digest: str, work: Path, runs: int, emu_pid: int) -> list[MemRun]:
    """`runs` plain runs, one under tracemalloc; then 3 x two diagnostics without put_file: a
    no-op sink (network + httpx only) and a sink that writes 1 MiB at a time."""
    from app.config import Settings
    from app.storage import LocalStorage
    from app.upstream.fal import FalClient, FalTimeouts, build_http_client

    max_bytes = Settings.model_fields["max_output_bytes"].default
    http = build_http_client(FalTimeouts())
    fal_client = FalClient("bench-fal-key", queue_url=url, rest_url=url, cdn_url=url, http=http)
    storage = LocalStorage(work / "files")
    results: list[MemRun] = []
    chunks: list[int] = []

    async def count_chunk(chunk: bytes) -> None:
        chunks.append(len(chunk))

    modes = ["plain"] * runs + ["traced"] + ["no-op sink", "1MiB sink"] * 3
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
            with measure_memory("self", f"run {i + 1}" if mode == "plain" else mode) as box:
                t0 = time.perf_counter()
                if mode == "no-op sink":
                    got = await fal_client.download(url, count_chunk, max_bytes=max_bytes)
                elif mode == "1MiB sink":
                    sink = await BufferedSink.open(dest)
                    got = await fal_client.download(url, sink.write, max_bytes=max_bytes)
                    await sink.close()
                else:
                    got = await fal_client.download(url, dest, max_bytes=max_bytes)
                t1, cpu1 = time.perf_counter(), time.process_time()
                if mode in ("plain", "traced"):
                    obj = await storage.put_file(key, dest, content_type="video/mp4")
                box["size"], box["put_s"] = got.size, time.perf_counter() - t1
                if mode == "traced":
                    box["traced"] = (
                        *tracemalloc.get_traced_memory(),
                        tracemalloc.get_tracemalloc_memory(),
                    )
                    tracemalloc.stop()
            run: MemRun = box["run"]
            run.extra = {
                "mode": mode,
                "download_s": t1 - t0,
                "put_s": box["put_s"],
                "cpu_s": time.process_time() - cpu0,
                "dl_cpu_s": cpu1 - cpu0,
                "queued_max": queue.max_bytes,
                "emu_cpu_s": cpu_of(emu_pid) - emu0,
                "sha_ok": obj.sha256 == digest and obj.size_bytes == got.size
                if mode in ("plain", "traced")
                else "-",
                "traced": box.get("traced"),
                "chunks": list(chunks),
            }
            results.append(run)
            await asyncio.to_thread(dest.unlink, missing_ok=True)
            await storage.delete(key)
    finally:
        queue.__exit__()
        await fal_client.aclose()
        await http.aclose()
    return results


def bench_mirror(args: Any, run: Run) -> None:
    print(
        f"\n== 1. Mirroring a {args.size_mib} MiB output: FalClient.download + "
        "LocalStorage.put_file"
    )
    emu = fal.start_emulator(run.procs, run.tmp / "emulator", fast=False)
    size = args.size_mib * MIB
    url, digest = put_on_emulator(emu, size)
    gc.collect()
    print(
        f"source    {size} random bytes in the emulator's CDN store, served at {url}\n"
        "sink      <tmp>/work/video-N.bin (FileWriter: .part + rename), then put_file -> "
        "<tmp>/files/jobs/bench/N/video.mp4 (sha256 + fsync); max_bytes = 512 MiB (default)\n"
        f"process   VmRSS before: {mib(proc_status()['VmRSS'])} MiB (this benchmark process)\n"
        f"loop      {args.loop} (what `foley worker` runs its FalClient on)"
    )
    work = mirror_runs(url, digest, run.tmp / "mirror", args.mirror_runs, emu.process.pid)
    if args.loop == "uvloop":
        import uvloop

        runs = uvloop.run(work)
    else:
        runs = asyncio.run(work)
    emu.stop()
    table = report.Table(
        *(("run", "<10"), ("total s", "7.2f"), ("download MB/s", ".0f"), ("put_file MB/s", "")),
        *(("CPU s here / emulator", ""), ("peak extra MiB HWM / sampled / anon", "")),
        *(("left after MiB", ""), ("sha ok", ""), ("read queue MiB", "")),
    )
    for r in runs:
        put = f"{r.size / 1e6 / r.extra['put_s']:.0f}" if r.extra["put_s"] > 1e-3 else "-"
        queued = r.extra["queued_max"]
        table.row(
            *(r.label, r.seconds, r.size / 1e6 / r.extra["download_s"], put),
            f"{r.extra['cpu_s']:.2f} / {r.extra['emu_cpu_s']:.2f}",
            *(peaks(r), mib(r.after_rss), str(r.extra["sha_ok"])),
            mib(None if queued is None else queued / 1024),
        )
    sinks = {"FileWriter": "plain", "1 MiB-buffered sink": "1MiB sink", "no-op sink": "no-op sink"}
    by_sink = {name: [r for r in runs if r.extra["mode"] == m] for name, m in sinks.items()}
    plain = by_sink["FileWriter"]
    current, peak, overhead = next(r for r in runs if r.extra["mode"] == "traced").extra["traced"]
    worst = max(plain, key=lambda r: r.peak)
    sizes = next(r for r in runs if r.extra["mode"] == "no-op sink").extra["chunks"]
    queued = [r.extra["queued_max"] for r in runs if r.extra["queued_max"] is not None]
    print(
        f"\ntracemalloc peak   {peak / MIB:.2f} MiB of Python allocations during the traced run "
        f"(held at its end: {current / MIB:.2f} MiB; tracemalloc's own tables "
        f"{overhead / MIB:.2f} MiB)\n"
        f"peak extra RSS     {mib(worst.peak)} MiB, worst plain run ({worst.label}); target <= "
        f"{TARGET_MIB} MiB: {verdict(worst.peak)}\n"
        f"throughput         download "
        f"{statistics.median(r.size / 1e6 / r.extra['download_s'] for r in plain):.0f} MB/s, "
        f"download + put_file {statistics.median(r.size / 1e6 / r.seconds for r in plain):.0f} "
        f"MB/s (medians of {len(plain)} plain runs; the emulator, this process and the disk "
        "share 2 cores)"
    )
    if sizes:
        print(
            f"chunks             response.aiter_bytes() gave {len(sizes)} chunks, mean "
            f"{statistics.mean(sizes) / 1024:.0f} KiB, max {max(sizes) / 1024:.0f} KiB: "
            "FileWriter.write: one asyncio.to_thread hop each"
        )
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
            for name, rs in by_sink.items()
        )
    )


# --- 2. uploads ---------------------------------------------------------------------------------


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


def upload(client: Any, variant: str, path: Path, f: TimedFile) -> Any:
    """POST the file once: raw (file object: Content-Length), chunked (generator:
    Transfer-Encoding: chunked) or multipart (field `file`)."""
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


def spool_dir_note() -> str:
    spool = Path(os.environ.get("TMPDIR") or tempfile.gettempdir())
    fstype, best = "?", ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if str(spool.resolve()).startswith(parts[1]) and len(parts[1]) > len(best):
                best, fstype = parts[1], parts[2]
    return f"{spool} on {fstype}" + (" (memory! not counted in RSS)" if fstype == "tmpfs" else "")


def measured_upload(api: Api, key: str, variant: str, path: Path, label: str) -> MemRun:
    """One upload, measured; the split mark is when the client read the file's last byte."""
    import httpx

    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=api.base, headers=headers, timeout=120) as client:
        with measure_memory(api.pid, label) as box, TimedFile(path, "rb") as f:
            try:
                r = upload(client, variant, path, f)
            finally:
                box["size"], box["mark"] = path.stat().st_size, f.eof_at
    run: MemRun = box["run"]
    run.extra = {"status": r.status_code, "variant": variant}
    if r.status_code == 201:
        run.extra["sha256"] = r.json().get("sha256")
    else:
        run.extra["error"] = r.text[:300]
    return run


def bench_upload(args: Any, run: Run, video: Path, small: Path) -> None:
    print("\n== 2. Accepting a 100 MiB upload: POST /v1/files on `foley api` ==")
    sent_sha, small_sha = sha256_of(video), sha256_of(small)
    print(
        f"video     {video.name}: {video.stat().st_size} bytes, sha256 {sent_sha[:12]}...\n"
        "api       python -m app.entrypoints api --host 127.0.0.1 --port N "
        f"(= `foley api`; uvloop + httptools); logs {run.out_dir}/api-N.log\n"
        f"spool     multipart parts past 1 MiB go to the API's tempdir: {spool_dir_note()}"
    )
    variants = ("raw", "chunked", "multipart")
    runs: list[MemRun] = []
    env = gateway_env(run.database("foley_media_bench"), run.tmp / "gateway")

    def new_api(n: int) -> Api:
        return Api(run.procs, env, run.out_dir, cli=True, name=f"api-{n}").start()

    # Cold: each variant as the first upload a freshly started API serves (one-time costs
    # included: python-multipart, PyAV's demuxers, the thread pool, the DB pool, ...).
    key = ""
    for n, variant in enumerate(variants, 1):
        api = new_api(n)
        key = key or api.new_tenant("bench").key
        runs.append(measured_upload(api, key, variant, video, f"{variant} cold"))
        api.stop()
    # Warm: one API; a small upload of each kind first, then rounds of the three.
    api = new_api(len(variants) + 1)
    start_rss = proc_status(api.pid)["VmRSS"]
    for variant in ("raw", "multipart"):
        runs.append(measured_upload(api, key, variant, small, f"{variant} small"))
    for round_ in range(1, args.upload_rounds + 1):
        for variant in variants:
            time.sleep(0.3)  # let the previous request's tail settle
            api.running.check()
            runs.append(measured_upload(api, key, variant, video, f"{variant} warm {round_}"))
    end_rss = proc_status(api.pid)["VmRSS"]
    api.stop()

    table = report.Table(
        *(("upload", "<16"), ("status", "d"), ("sha ok", ""), ("total s", ".2f"), ("MB/s", ".0f")),
        *(("API RSS before MiB", ""), ("peak extra MiB HWM / sampled / anon", "")),
        *(("sampled: body / after", ""), ("left after MiB", ""), ("target", "")),
    )
    for r in runs:
        small_run = r.label.endswith("small")
        r.extra["sha_ok"] = r.extra.get("sha256") == (small_sha if small_run else sent_sha)
        split = f"{mib(r.split[0])} / {mib(r.split[1])}" if r.split else "n/a"
        table.row(
            *(r.label, r.extra["status"], str(r.extra["sha_ok"]), r.seconds),
            *(r.size / 1e6 / r.seconds, mib(r.base_rss), peaks(r), split, mib(r.after_rss)),
            "-" if small_run else verdict(r.peak),
        )
        if "error" in r.extra:
            table.note(f"error: {r.extra['error']}")
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
            f"{variant:<9} worst peak extra RSS {mib(worst)} MiB over {len(mine)} uploads (cold "
            f"{mib(mine[0].peak)}); target <= {TARGET_MIB} MiB: {verdict(worst)}"
        )
    print(
        f"API RSS   warm API: {mib(start_rss)} MiB after start, {mib(end_rss)} MiB after all its "
        f"uploads; sampling every 10 ms ({big[0].samples} samples in '{big[0].label}')"
    )


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
    timings, extra_kib = [], []
    for n in (1, calls):  # the cold call, then the warm ones
        gc.collect()
        base = proc_status()["VmRSS"]
        reset_hwm()
        for _ in range(n):
            t0 = time.perf_counter()
            info = probe(path)
            timings.append(time.perf_counter() - t0)
        extra_kib.append(proc_status()["VmHWM"] - base)
    video, audio = info.video, info.audio
    media = f"{info.container} {info.duration_s:.2f} s, "
    media += f"{video.codec} {video.width}x{video.height} {video.fps} fps" if video else "no video"
    media += f", {audio.codec} {audio.sample_rate} Hz" if audio else ""
    media += f", {info.size_bytes / MIB:.1f} MiB"
    result = {"import_s": import_s, "cold_s": timings[0], "warm": timings[1:], "media": media}
    print(json.dumps(result | {"cold_kib": extra_kib[0], "warm_kib": extra_kib[1]}))


def bench_probe(args: Any, clips: Sequence[Path]) -> None:
    print("\n== 3. probe() time (fresh process; first call after posix_fadvise DONTNEED) ==")
    table = report.Table(
        *(("file", "<33"), ("import s", ".2f"), ("cold ms", ".1f")),
        *(("warm median ms (min-max, n)", ""), ("peak extra RSS MiB cold / warm", "")),
    )
    for path in clips:
        cmd = [PY, str(Path(__file__).resolve()), "_probe", str(path), str(args.probe_calls)]
        done = subprocess.run(cmd, cwd=REPO, capture_output=True, timeout=120, check=False)
        if done.returncode != 0:
            table.note(f"{path.name}: probe failed:\n{done.stderr.decode()[-2000:]}")
            continue
        res = json.loads(done.stdout.decode().strip().splitlines()[-1])
        warm = [t * 1000 for t in res["warm"]]
        table.row(
            *(path.name, res["import_s"], res["cold_s"] * 1000),
            f"{statistics.median(warm):.2f} ({min(warm):.2f}-{max(warm):.2f}, {len(warm)})",
            f"{mib(res['cold_kib'])} / {mib(res['warm_kib'])}",
        )
        table.note(res["media"])
    print(
        "(import s: `from app.media.probe import probe` in a fresh interpreter; cold: its first "
        "call, the file dropped from the page cache; warm: the next calls)"
    )


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> Any:
    p = parser("media_bench", __doc__)
    p.add_argument("--size-mib", type=int, default=100, help="mirrored output size [100]")
    p.add_argument("--mirror-runs", type=int, default=3, help="untraced mirroring runs [3]")
    p.add_argument("--upload-rounds", type=int, default=2, help="rounds of raw/chunked/multipart")
    p.add_argument("--probe-calls", type=int, default=20, help="warm probe calls [20]")
    p.add_argument("--skip-mirror", action="store_true")
    p.add_argument("--skip-upload", action="store_true")
    p.add_argument("--skip-probe", action="store_true")
    p.add_argument("--regenerate", action="store_true", help="re-encode the cached media")
    p.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="asyncio",
        help="event loop of the mirroring runs [asyncio: what `foley worker` runs]",
    )
    return parse(p, argv)


def measure(args: Any, run: Run) -> None:
    if not args.skip_mirror:
        bench_mirror(args, run)
    if args.skip_upload and args.skip_probe:
        return
    print(f"\nmedia     (cached under {run.out_dir}, gitignored)")
    video = ensure_media("upload", run.out_dir / UPLOAD_VIDEO, args.regenerate)
    clip = ensure_media("probe", run.out_dir / PROBE_CLIP, args.regenerate)
    if not args.skip_upload:
        bench_upload(args, run, video, clip)
    if not args.skip_probe:
        bench_probe(args, [clip, video])


def on_alarm(signum: int, frame: object) -> None:
    raise BenchError(f"time limit of {TIME_LIMIT_S} s reached; stopping")


def main(argv: Sequence[str]) -> int:
    if argv[:1] == ["_generate"]:
        path = Path(argv[2])
        made = (
            generate_upload_video(path, 100 * MIB)
            if argv[1] == "upload"
            else generate_probe_clip(path)
        )
        print(json.dumps(made))
        return 0
    if argv[:1] == ["_probe"]:
        probe_child(Path(argv[1]), int(argv[2]))
        return 0
    args = parse_args(argv)
    from app.logging import configure_logging

    configure_logging("WARNING")  # the FalClient's per-call info lines are not figures
    with Run("media_bench", args, versions=VERSIONS) as run:
        import av

        print(f"ffmpeg    libavformat {'.'.join(map(str, av.library_versions['libavformat']))}")
        signal.signal(signal.SIGALRM, on_alarm)
        signal.alarm(TIME_LIMIT_S)
        try:
            measure(args, run)
        finally:
            signal.alarm(0)
    return run.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
