# Two commands set everything up on a fresh machine: `make demo` and `make test`.
# Both create .venv the first time (and again when pyproject.toml or constraints.txt changes),
# with the exact versions of constraints.txt: pyproject.toml says ranges, for users' projects.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck browser unit packaging bench lock clean

# Postgres tests use this server (skipped, with the reason, when it does not answer).
KLINGFLOW_TEST_POSTGRES_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
export KLINGFLOW_TEST_POSTGRES_URL

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "klingflow needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/klingflow demo

# lint and typecheck run beside the tests, which leave part of the cores idle (subprocesses,
# servers, the emulator's clock): 10-20 s off the wall time. Their lines land among pytest's.
test: browser
	@$(MAKE) --no-print-directory -j 3 lint typecheck unit

# The browser tests drive Debian's Chromium; install it when missing and this machine allows
# (root with apt-get), else those tests skip and say why.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 \
	      || { apt-get update -qq >/dev/null 2>&1 \
	           && apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1; } \
	      || echo "could not install chromium: the browser tests will skip"; \
	  else \
	    echo "no $(CHROMIUM) and no apt-get as root to install it: the browser tests will skip"; \
	  fi; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# One session: the engine tests run twice, `[sqlite]` and `[postgres]` (run log and DBOS on
# Postgres), so the Postgres leg fills the workers' idle tail rather than running after the
# rest with a start-up of its own. `KLINGFLOW_TEST_DATABASE=postgres pytest tests/workflows`
# runs that leg alone by hand.
# Bytecode is cached even where PYTHONDONTWRITEBYTECODE is set (this machine sets it): each
# xdist worker would otherwise compile every test module again (pytest's rewritten asserts:
# collection took 9.2 s of CPU per worker instead of 4.4), and each `python -m klingflow` a
# test starts all of klingflow. The caches are __pycache__ folders, which git ignores.
# PYTEST_FLAGS: more pytest arguments, e.g. `make unit PYTEST_FLAGS="-x tests/piapi"`.
unit: $(STAMP)
	PYTHONDONTWRITEBYTECODE= KLINGFLOW_TEST_DATABASE=both $(BIN)/pytest -q $(PYTEST_FLAGS)

# The slow packaging tests alone: the wheel in fresh venvs (by role, the docs' pytest user),
# and the lower bounds of pyproject.toml in another (all also run in `make unit`).
packaging: $(STAMP)
	$(BIN)/pytest -q -m packaging

# The benchmarks of issue 16 against the emulator on loopback (about 10 minutes on 2 cores):
# rewrites docs/benchmarks.md, docs/benchmarks.json and docs/images/bench/*.png.
# `make bench BENCH_FLAGS=--quick` is a 1-2 minute smoke run; `BENCH_FLAGS="--only memory"`
# redoes one section (bench/README.md lists them and their flags).
bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_FLAGS)

# Refresh constraints.txt from a fresh venv with the newest versions pyproject.toml allows
# (then run `make test` before committing it).
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# Exact versions for our own make test / CI (make lock); users get pyproject's ranges."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | LC_ALL=C sort -f; } > constraints.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
