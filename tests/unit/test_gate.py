"""`airollout gate`: the diff it proposes, what `--write` leaves (code that parses, a call a flag now decides)
on every example service in both languages, and the sites it refuses with the fix named."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from airollout.cli import main
from airollout.instrument.scanning import scan
from airollout.instrument.script_scan import parse_script
from airollout_testbed.ai_corpus import EXAMPLES, Example, write_corpus
from tests.support.gating import gated_site

GATED = [e for e in EXAMPLES if e.entry]


def _corpus(tmp_path: Path, name: str) -> Path:
    return write_corpus(tmp_path, tuple(e for e in EXAMPLES if e.name == name))[name]


@pytest.mark.parametrize("example", GATED, ids=[e.name for e in GATED])
def test_gate_write_leaves_code_that_parses_and_a_call_the_flag_decides(example: Example, tmp_path: Path) -> None:
    root = write_corpus(tmp_path, (example,))[example.name]
    site, _ = gated_site(example)
    before = {s.address: s for s in scan(root).sites}
    assert not before[site].guarded

    assert main(["gate", site, "--root", str(root), "--flag", "new-model", "--candidate", "model-b", "--write"]) == 0

    path, _, _ = site.partition(":")
    source = (root / path).read_text()
    if example.language == "python":
        ast.parse(source)
    else:
        assert not parse_script(path, source).root_node.has_error, source
    assert '"model-b"' in source
    after = scan(root).sites
    assert len(after) == len(before)
    assert sum(s.guarded for s in after) == sum(s.guarded for s in before.values()) + 1


def test_without_write_gate_prints_a_unified_diff_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _corpus(tmp_path, "openai-py")
    original = (root / "app/service.py").read_text()
    assert main(["gate", "app/service.py:5", "--root", str(root), "--flag", "new-model", "--candidate", "gpt-4o"]) == 0
    diff = capsys.readouterr().out
    assert diff.startswith("--- a/app/service.py\n+++ b/app/service.py\n")
    assert "+from fbclient import get as featbit_client\n" in diff
    assert '+    airollout_variant = featbit_client().variation("new-model", {"key": str(user_id)' in diff
    assert '"feature_flag.result.variant": airollout_variant' in diff
    assert 'model=("gpt-4o" if airollout_variant == "candidate" else "gpt-4o-mini")' in diff
    assert (root / "app/service.py").read_text() == original


def test_typescript_is_gated_through_openfeature(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _corpus(tmp_path, "vercel-ai-ts")
    assert (
        main(["gate", "src/service.ts:6", "--root", str(root), "--flag", "chat-model", "--candidate", "gpt-4.1"]) == 0
    )
    diff = capsys.readouterr().out
    assert '+import { OpenFeature } from "@openfeature/server-sdk";' in diff
    assert (
        'await OpenFeature.getClient().getStringValue("chat-model", "control", { targetingKey: String(userId) })'
        in diff
    )
    assert 'openai(airolloutVariant === "candidate" ? "gpt-4.1" : "gpt-4o")' in diff


@pytest.mark.parametrize(
    ("example", "site", "extra", "message"),
    [
        ("openai-guarded-py", "service.py:11", [], "a feature flag already decides this call"),
        ("langchain-py", "service.py:6", [], "pass the model at the call"),
        ("vercel-ai-ts", "src/service.ts:11", [], "not in an async function"),
        ("openai-py", "app/service.py:6", [], "no AI model call there"),
        ("openai-py", "app/service.py", [], "write it as PATH:LINE"),
        ("openai-py", "app/service.py:5", ["--env-id", "x"], "--featbit-url and --env-id: give both"),
    ],
)
def test_sites_gate_cannot_take_are_refused_naming_the_fix(
    example: str, site: str, extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _corpus(tmp_path, example)
    assert main(["gate", site, "--root", str(root), "--flag", "f", "--candidate", "m", *extra]) == 2
    assert message in capsys.readouterr().err


def test_a_call_whose_function_names_no_user_asks_for_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "job.py").write_text("import litellm\n\n\ndef nightly():\n    litellm.completion(model='gpt-4o')\n")
    assert main(["gate", "job.py:5", "--root", str(tmp_path), "--flag", "f", "--candidate", "m"]) == 2
    assert "--user: nothing at job.py:5 (function nightly) names the user" in capsys.readouterr().err
    assert (
        main(["gate", "job.py:5", "--root", str(tmp_path), "--flag", "f", "--candidate", "m", "--user", "'batch'"]) == 0
    )


def test_a_change_that_would_not_parse_is_never_proposed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The call sits in an `elif` test: the flag cannot be evaluated on a line of its own before it.
    (tmp_path / "svc.py").write_text(
        "import litellm\n\n\ndef answer(user_id, mode):\n    if mode:\n        pass\n"
        "    elif litellm.completion(model='gpt-4o'):\n        pass\n"
    )
    before = (tmp_path / "svc.py").read_text()
    assert main(["gate", "svc.py:7", "--root", str(tmp_path), "--flag", "f", "--candidate", "m", "--write"]) == 2
    assert "the gated code would not parse" in capsys.readouterr().err
    assert (tmp_path / "svc.py").read_text() == before
