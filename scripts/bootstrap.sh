#!/usr/bin/env bash
# Everything the demo and the tests need on a fresh machine: the real tools (cached outside the repository)
# and a virtualenv with AIRollout and its test dependencies. Idempotent: a second run costs seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-tools.sh
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install --quiet --upgrade pip
  .venv/bin/pip install --quiet -e '.[test]'
  rm -f .venv/.installed-* && touch "$stamp"
fi
