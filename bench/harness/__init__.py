"""What every benchmark under bench/ shares; each benchmark is a short script on top of it.

- `run`: the frame of a run: common flags, the header (command, machine, code), cleanup.
- `procs`: child processes (spawn, wait until they answer HTTP, stop), ports, pinning, uvicorn.
- `database`: a fresh migrated database per run on the embedded Postgres (or
  FOLEY_BENCH_DATABASE_URL's server), SQL helpers, Postgres's CPU, a pg_stat_activity sampler.
- `gateway`: the gateway's API and worker processes, tenants and keys through the admin API.
- `fal`: the fal emulator process and its request log, read over HTTP and counted by kind.
- `load`: load generators in a process of their own (closed loop, steady rate).
- `meters`: CPU time and memory of processes, from /proc.
- `report`: percentiles and tables.
- `profile`: py-spy of a process and a summary of its samples.

Imports stay light here: the load generator and the baseline server import parts of it.
"""

import sys
from pathlib import Path

# The scripts import app.* and tests.support.* from the repository this harness lives in.
_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.append(_REPO)
