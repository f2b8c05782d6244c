"""The README is the operator's manual: every Event reason and verb it can emit or accept is documented there."""

from pathlib import Path

import pytest

from airollout.planner import Verb
from airollout.reasons import ConditionType, Reason

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


@pytest.mark.parametrize("reason", list(Reason))
def test_every_event_reason_is_documented(reason: Reason) -> None:
    assert f"`{reason.value}`" in README


@pytest.mark.parametrize("verb", list(Verb))
def test_every_verb_is_documented(verb: Verb) -> None:
    assert f"`{verb.value}`" in README


@pytest.mark.parametrize("condition", list(ConditionType))
def test_every_condition_type_is_documented(condition: ConditionType) -> None:
    assert f"`{condition.value}`" in README
