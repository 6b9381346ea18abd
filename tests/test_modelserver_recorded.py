"""The transcripts recorded from the real CLIs (tests/fixtures/recorded) are complete and clean.

Re-record with ``python -m harness.recording``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.cli_runs import DUMMY_API_KEY, jsonl
from pipeline.lib.redaction import _PATTERN

RECORDED = Path(__file__).parent / "fixtures" / "recorded"
MANIFEST = json.loads((RECORDED / "manifest.json").read_text())


def lines_of(name: str) -> list[dict]:
    text = (RECORDED / name).read_text()
    parsed = jsonl(text)
    assert len(parsed) == len(text.splitlines()), f"{name} has non-JSON lines"
    return parsed


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_every_recorded_transcript_is_listed_json_lines_and_holds_no_key(name):
    text = (RECORDED / name).read_text()
    assert lines_of(name)
    assert DUMMY_API_KEY not in text
    assert not _PATTERN.search(text), "something that looks like a token or key"
    # 53: turn limit (Gemini CLI, Qwen Code); 145 and 173: Gemini CLI exits with HTTP 401 / 429 modulo 256
    assert MANIFEST[name]["exit_code"] in (0, 1, 53, 145, 173)


def test_the_manifest_lists_every_transcript():
    assert sorted(MANIFEST) == sorted(p.name for p in RECORDED.glob("*.jsonl"))


def test_the_claude_transcripts_end_with_the_expected_result():
    success = lines_of("claude-2.1.197.write-bash-success.jsonl")
    assert [
        tool["name"]
        for line in success
        if line["type"] == "assistant"
        for tool in line["message"]["content"]
        if tool["type"] == "tool_use"
    ] == ["Write", "Bash"]
    assert (
        success[-1]["subtype"] == "success"
        and success[-1]["usage"]["input_tokens"] == 1234 + 2345
    )
    assert (
        lines_of("claude-2.1.197.max-turns.jsonl")[-1]["subtype"] == "error_max_turns"
    )
    assert (
        lines_of("claude-2.1.197.auth-401-no-retries.jsonl")[-1]["api_error_status"]
        == 401
    )


def test_the_codex_transcripts_end_with_the_expected_turn_event():
    success = lines_of("codex-0.169.0.shell-success.jsonl")
    assert success[-1]["type"] == "turn.completed"
    assert any(
        line.get("item", {}).get("type") == "command_execution" for line in success
    )
    failed = lines_of("codex-0.169.0.auth-401.jsonl")
    assert failed[-1]["type"] == "turn.failed"
    assert (
        sum(
            line["message"].startswith("Reconnecting...")
            for line in failed
            if line["type"] == "error"
        )
        == 5
    )
