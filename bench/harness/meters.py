"""CPU time and memory of processes, read from /proc (Linux)."""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
from collections.abc import Callable
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def stat_fields(pid: int | str) -> list[str]:
    """/proc/<pid>/stat after the command name (field 3 onwards: index 0 is the state)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_of(pid: int, *, reaped: bool = False) -> float:
    """User + system CPU seconds of a process (all its threads), and with `reaped` those of its
    children it has waited for (cutime, cstime); 0 if it is gone."""
    try:
        fields = stat_fields(pid)
        return sum(int(f) for f in fields[11 : 15 if reaped else 13]) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def children_of(parent: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if int(stat_fields(entry.name)[1]) == parent:
                    pids.append(int(entry.name))
    return pids


def self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class CpuMeter:
    """CPU seconds used between start() and stop(), per name; each name has a callable giving
    a running total (e.g. `lambda: cpu_of(pid)`)."""

    def __init__(self, named: dict[str, Callable[[], float]]) -> None:
        self.named = named
        self.before: dict[str, float] = {}
        self.used: dict[str, float] = {}
        self.wall = 0.0

    def start(self) -> CpuMeter:
        self.before = {n: f() for n, f in self.named.items()}
        self.wall = time.perf_counter()
        return self

    def stop(self) -> CpuMeter:
        self.wall = time.perf_counter() - self.wall
        self.used = {n: max(0.0, f() - self.before[n]) for n, f in self.named.items()}
        return self

    def share(self, name: str) -> float:
        """Share of one core over the metered time (2 busy cores = 2.0)."""
        return self.used[name] / self.wall if self.wall > 0 else 0.0

    def shares(self) -> str:
        return ", ".join(f"{n} {self.share(n) * 100:.0f}%" for n in self.used)


# --- memory -------------------------------------------------------------------------------------


def proc_status(pid: int | str = "self") -> dict[str, int]:
    """VmRSS, VmHWM, RssAnon, RssFile, RssShmem in KiB (missing ones are absent); {} if gone."""
    out: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
                out[name] = int(value.split()[0])
    return out


def reset_hwm(pid: int | str = "self") -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class RssSampler:
    """VmRSS and RssAnon (KiB) of a process every `interval` s from a thread, between entering
    and leaving: `before`, `after` (its /proc status then) and `series` of (perf_counter, VmRSS,
    RssAnon)."""

    def __init__(self, pid: int | str = "self", interval: float = 0.01) -> None:
        self.pid, self.interval = pid, interval
        self.series: list[tuple[float, int, int]] = []
        self.before: dict[str, int] = {}
        self.after: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            s = proc_status(self.pid)
            if s:
                self.series.append((time.perf_counter(), s["VmRSS"], s.get("RssAnon", 0)))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.before = proc_status(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.after = proc_status(self.pid)

    def peak(self, field: str = "VmRSS", *, until: float | None = None) -> int:
        """The largest value sampled (before and after included), or only up to `until`."""
        i = 1 if field == "VmRSS" else 2
        values = [s[i] for s in self.series if until is None or s[0] <= until]
        ends = [self.before.get(field, 0)] + ([self.after.get(field, 0)] if until is None else [])
        return max(values + ends)

    def peak_after(self, mark: float) -> int:
        """The largest VmRSS sampled after `mark` (the end state included)."""
        return max([s[1] for s in self.series if s[0] > mark] + [self.after.get("VmRSS", 0)])
