# The two commands of the README: `make demo` and `make test`. Both install what they need first.
.PHONY: demo test test-fast test-long lint bootstrap bench

PY := .venv/bin

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	$(PY)/airollout demo

lint: bootstrap
	$(PY)/ruff check operator testbed tests $(wildcard benchmarks)
	$(PY)/ruff format --check operator testbed tests $(wildcard benchmarks)
	$(PY)/mypy
	$(PY)/lint-imports

# Everything but kind e2e (which skips by itself where no Docker engine answers) and the full-size reliability
# runs (`long`, below).
test: lint
	$(PY)/pytest -p no:cacheprovider -m "not long"

# The reliability suite at full size: 100 SIGKILL trials, 10,000 generated specs (docs/reliability.md).
test-long: bootstrap
	$(PY)/pytest -p no:cacheprovider -m long tests/reliability

# The pure core only: seconds, no tools needed.
test-fast: bootstrap
	$(PY)/pytest -p no:cacheprovider tests/unit

bench: bootstrap
	for b in benchmarks/*.py; do $(PY)/python $$b || exit 1; done
