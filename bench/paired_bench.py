"""Paired benchmark: the worker's CPU per job of this checkout against another commit's, both run
at the same moment, so that both meet the same machine.

    .venv/bin/python bench/paired_bench.py --against 9455637           # 3 pairs, about 3 min
    .venv/bin/python bench/paired_bench.py --against HEAD --pairs 2    # A/A: the method's noise
    .venv/bin/python bench/paired_bench.py --against main --bench-args "--rate 5"

On a shared VM the speed of the cores moves by a third within an hour, so a CPU figure taken now
and one taken ten minutes later compare the machine more than the code. Here each pair is two
`gateway_bench.py --skip-throughput --no-pin` runs started together, one from this checkout and
one from a git worktree of `--against` (each its own database, emulator, API and worker, on the
same embedded Postgres server), and the figure is the ratio of their workers' CPU per job over
every job's whole life. The other commit's own benchmark script runs, in whatever format it
printed then; both formats are read. Postgres's CPU is not separable (one server for both) and is
not compared.
"""

from __future__ import annotations

import argparse
import re
import shlex
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from harness.procs import PY, REPO, BenchError
from harness.report import Table
from harness.run import Run, parse, parser

# What gateway_bench printed: the whole-life table since the harness ("worker  21%  21.7"),
# one line before it ("CPU ms per job: API 2.2, worker 37.7, emulator 2.6, ...").
_TABLE_ROW = r"^\s+{name}\s+\d+%\s+([\d.]+)\s*$"
_ONE_LINE = r"CPU ms per job:.*?\b{name} ([\d.]+)"


def per_job(output: str, name: str) -> float | None:
    """The CPU ms per job of process `name` ("worker", "emulator") in a gateway_bench output."""
    for pattern in (_TABLE_ROW, _ONE_LINE):
        found = re.search(pattern.format(name=name), output, re.MULTILINE)
        if found:
            return float(found.group(1))
    return None


def checkout(ref: str, where: Path) -> str:
    """A detached worktree of `ref` at `where`; answers the commit."""
    commit = _git("rev-parse", "--verify", f"{ref}^{{commit}}").strip()
    _git("worktree", "add", "--detach", str(where), commit)
    return commit


def _git(*args: str) -> str:
    done = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def run_pair(sides: dict[str, Path], out_dir: Path, pair: int, extra: Sequence[str]) -> dict:
    """Both sides' gateway_bench at once; each side's output file and figures."""
    running = {}
    for side, root in sides.items():
        out = out_dir / f"pair-{pair}-{side}.txt"
        command = [
            PY,
            str(root / "bench" / "gateway_bench.py"),
            "--skip-throughput",
            "--no-pin",
            "--out-dir",
            str(out_dir / side),
            *extra,
        ]
        with out.open("w") as sink:  # the child keeps its own copy of the descriptor
            process = subprocess.Popen(command, cwd=root, stdout=sink, stderr=subprocess.STDOUT)
        running[side] = (out, process)
    figures = {}
    for side, (out, process) in running.items():
        code = process.wait(timeout=900)
        text = out.read_text()
        figures[side] = {
            "worker": per_job(text, "worker"),
            "emulator": per_job(text, "emulator"),
            "exit": code,
            "out": out,
        }
    return figures


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = parser("paired_bench", __doc__)
    p.add_argument("--against", required=True, help="the commit (any git ref) to compare with")
    p.add_argument("--pairs", type=int, default=3, help="pairs of simultaneous runs [3]")
    p.add_argument(
        "--bench-args",
        default="",
        help='more flags for both gateway_bench runs, e.g. "--rate 5 --runtime-s 2"',
    )
    return parse(p, argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with Run("paired_bench", args) as run:
        other = run.tmp / "against"
        commit = checkout(args.against, other)
        try:
            print(f"against   {args.against} = {commit[:12]} (a worktree in {other})")
            sides = {"this": REPO, "against": other}
            extra = shlex.split(args.bench_args)
            print(
                f"\n== worker CPU per job over each job's whole life, {args.pairs} pairs of "
                "gateway_bench.py --skip-throughput --no-pin " + " ".join(extra) + " at once"
            )
            table = Table(
                ("pair", ">4"),
                ("this: worker ms/job", ">19.1f"),
                ("against: worker ms/job", ">22.1f"),
                ("ratio", ">5.2f"),
                ("emulator ms/job this / against", ">30"),
            )
            ratios = []
            for pair in range(1, args.pairs + 1):
                got = run_pair(sides, run.out_dir, pair, extra)
                this, against = got["this"], got["against"]
                if this["worker"] is None or against["worker"] is None:
                    failed = [
                        f"{s['out']} (exit {s['exit']})"
                        for s in (this, against)
                        if s["worker"] is None
                    ]
                    raise BenchError("no worker figure in " + ", ".join(failed))
                ratio = this["worker"] / against["worker"]
                ratios.append(ratio)
                table.row(
                    pair,
                    this["worker"],
                    against["worker"],
                    ratio,
                    f"{this['emulator']} / {against['emulator']}",
                )
            print(
                f"\n   median ratio (this / against): {statistics.median(ratios):.2f} "
                f"over {len(ratios)} pairs (each run's output: {run.out_dir}/pair-N-<side>.txt)"
            )
        finally:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(other)],
                capture_output=True,
            )
    return run.exit_code


if __name__ == "__main__":
    sys.exit(main())
