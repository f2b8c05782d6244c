# The two commands of the README: `make demo` and `make test`. Both install what they need first.
.PHONY: demo test test-fast lint bootstrap bench

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

# Everything but kind e2e (which skips by itself where no Docker engine answers).
test: lint
	$(PY)/pytest -p no:cacheprovider

# The pure core only: seconds, no tools needed.
test-fast: bootstrap
	$(PY)/pytest -p no:cacheprovider tests/unit

bench: bootstrap
	for b in benchmarks/*.py; do $(PY)/python $$b || exit 1; done
