"""Fixtures shared by every test tier live in tests/support, one plugin module per real component."""

import os
from pathlib import Path

import pytest

# Support modules import one another; rewriting them all up front keeps their asserts informative.
pytest.register_assert_rewrite("tests.support")

pytest_plugins = sorted(
    f"tests.support.{path.stem}" for path in (Path(__file__).parent / "support").glob("*.py") if path.stem != "__init__"
)

# Tests never talk to a cluster the developer happens to have configured.
os.environ.pop("KUBECONFIG", None)
