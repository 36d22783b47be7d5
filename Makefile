# The two commands of the README, and a few more. Everything runs through uv and the lock file;
# `make` installs uv itself if it is missing, so a fresh machine needs only Python 3.11+ and make.
UV_VERSION := 0.13.8
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")

.PHONY: up test setup lint bench chaos

setup:
	@$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	@$(UV) sync --frozen --quiet

up: setup  ## embedded Postgres + migrations + API + worker + fal emulator, no configuration
	$(UV) run --frozen foley up

test: setup  ## the whole suite: real Postgres, the emulator over HTTP
	$(UV) run --frozen pytest

lint: setup
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

BENCHES := synth emulator gateway usage media slow_clients scale_out cache long_video

bench: setup  ## every benchmark (bench/README.md), ~15 min; one of them: make bench BENCH=gateway
	@for name in $(or $(BENCH),$(BENCHES)); do \
		$(UV) run --frozen python bench/$${name}_bench.py || exit 1; \
	done

chaos: setup  ## the chaos scenarios against real processes, ~10 min; exits 1 naming a failed condition
	$(UV) run --frozen python bench/chaos_bench.py $(CHAOS_ARGS)
