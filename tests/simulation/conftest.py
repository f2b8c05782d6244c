"""Every test in this folder is a simulation (marker `simulation`): thousands of rollouts with fixed seeds."""

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _HERE in item.path.parents:
            item.add_marker(pytest.mark.simulation)
