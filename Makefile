# The two commands the README starts with, and the checks behind them.
# Each target sets up what it needs (idempotently) before it runs.
PY := .venv/bin/python

.PHONY: run test check setup postgres chromium rust llama-server lint types test-rust test-python ui

## Run the default experiment: Python agent, embedded Gemma 3 270M on llama.cpp.
run: setup
	$(PY) -m cfexp

## Run every test (Python and Rust) and the linters, exactly as CI does.
test: setup postgres chromium rust llama-server lint types test-rust test-python

## Formatting, lint, types and all tests for both languages.
check: test

setup:
	./scripts/bootstrap

## PostgreSQL's programs for the shared-tracking tests (Debian's packages; installs when missing).
postgres:
	./scripts/postgres >/dev/null

## Chromium for the browser test of `cfexp ui` (Debian's package; installs when missing).
chromium:
	./scripts/chromium >/dev/null

## Build every Rust agent variant (release, cached by cargo).
rust:
	./rust/build-all.sh

## llama.cpp's llama-server for backend=llamaserver: built once from the pinned
## llama.cpp source (several minutes on 2 cores), then cached in ~/.cache/cfexp.
llama-server: setup
	$(PY) -m cfexp.backends.llama_server_build

## Python lint (pyflakes, pycodestyle, bugbear, pyupgrade, import order; config in pyproject.toml).
lint: setup
	.venv/bin/ruff check cfexp hydra_plugins tests benchmarks

## Types: mypy on cfexp and the sweepers, strict on metrics, agents, config, report (pyproject.toml).
types: setup
	.venv/bin/mypy

test-rust:
	cd rust && cargo fmt --all --check && cargo clippy --all-targets --all-features -- -D warnings && cargo test --all-features

test-python:
	$(PY) -m pytest -ra --durations=25

## The MLflow UI on the default store (http://127.0.0.1:5000).
ui: setup
	.venv/bin/cfexp ui
