#!/usr/bin/env bash
# Everything the demo and the tests need on a fresh machine: the real tools (cached outside the repository)
# and a virtualenv with AIRollout, its test tools and the test bed (testbed/, a distribution of its own that
# never ships). Idempotent: a second run costs seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-tools.sh
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml testbed/pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e '.[test,console,scan,mcp]' -e ./testbed
  rm -f .venv/.installed-* && touch "$stamp"
fi
