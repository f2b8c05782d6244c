"""`airollout scan` on the example services: every declared call found with its provider, model and guard,
nothing else reported, and the reports (table, JSON, SARIF 2.1.0) a person and code scanning in CI read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airollout.cli import main
from airollout.instrument.scanning import scan
from airollout_testbed.ai_corpus import EXAMPLES, Example, ExpectedSite, expected_sites, write_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_scan_reports_exactly_the_declared_calls(example: Example, corpus: dict[str, Path]) -> None:
    result = scan(corpus[example.name])
    found = {ExpectedSite(s.path, s.line, s.provider, s.model, s.guarded) for s in result.sites}
    assert found == expected_sites(example)
    assert result.problems == ()


def test_every_provider_is_found_in_python_and_typescript(corpus: dict[str, Path]) -> None:
    by_language: dict[str, set[str]] = {}
    for example in EXAMPLES:
        for site in scan(corpus[example.name]).sites:
            by_language.setdefault("python" if site.language == "python" else "script", set()).add(site.provider)
    common = {"OpenAI", "Azure OpenAI", "Anthropic", "Google", "AWS Bedrock", "Mistral", "Cohere", "Ollama",
              "LangChain", "LlamaIndex", "Hugging Face"}  # fmt: skip
    assert by_language["python"] == common | {"LiteLLM"}
    assert by_language["script"] == common | {"Vercel AI SDK"}


def test_json_lists_each_site_with_the_address_gate_takes(
    corpus: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scan", str(corpus["openai-py"]), "--format", "json"]) == 0
    sites = json.loads(capsys.readouterr().out)["sites"]
    assert [(s["site"], s["provider"], s["model"], s["kind"]) for s in sites] == [
        ("app/service.py:5", "OpenAI", "gpt-4o-mini", "generation"),
        ("app/service.py:11", "OpenAI", "text-embedding-3-small", "embedding"),
    ]


def test_sarif_marks_ungated_calls_as_warnings_where_code_scanning_shows_them(
    corpus: dict[str, Path], tmp_path: Path
) -> None:
    report = tmp_path / "scan.sarif"
    assert main(["scan", str(corpus["openai-guarded-ts"]), "--format", "sarif", "-o", str(report)]) == 0
    log = json.loads(report.read_text())
    assert log["version"] == "2.1.0"
    run = log["runs"][0]
    assert {rule["id"] for rule in run["tool"]["driver"]["rules"]} == {"ungated-ai-call", "gated-ai-call"}
    results = [
        (r["ruleId"], r["level"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
         r["locations"][0]["physicalLocation"]["region"]["startLine"])
        for r in run["results"]
    ]  # fmt: skip
    assert results == [
        ("gated-ai-call", "note", "src/service.ts", 10),
        ("ungated-ai-call", "warning", "src/service.ts", 12),
    ]


def test_the_table_counts_guarded_and_unguarded_calls(
    corpus: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scan", str(corpus["openai-guarded-py"])]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["SITE", "PROVIDER", "OPERATION", "MODEL/PROMPT", "GUARDED"]
    assert lines[1].split() == ["service.py:11", "OpenAI", "responses.create", "gpt-4.1", "yes"]
    assert lines[-1] == "2 AI model call sites, 2 guarded by a feature flag, 0 not"


def test_a_path_that_does_not_exist_is_refused_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan", str(tmp_path / "nowhere")]) == 2
    assert "nowhere: no such file or directory" in capsys.readouterr().err


def test_a_file_that_does_not_parse_is_reported_and_the_rest_scanned(tmp_path: Path) -> None:
    (tmp_path / "broken.py").write_text("def (:\n")
    (tmp_path / "ok.py").write_text("import litellm\nlitellm.completion(model='gpt-4o', messages=[])\n")
    result = scan(tmp_path)
    assert [(s.path, s.line) for s in result.sites] == [("ok.py", 2)]
    assert result.problems[0].startswith("broken.py:1: not Python")
