"""The parsers over the transcripts recorded from the real CLIs and TAC-X's scripted model server.

``tests/fixtures/recorded/manifest.json`` says, per file, the CLI, its argv and its exit code;
expected figures are read off the transcript lines themselves (and, for Codex, the script).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from pipeline.lib.pricing import cost_for
from pipeline.providers import get_provider
from pipeline.providers.base import Invocation

ROOT = Path(__file__).resolve().parent.parent
RECORDED = Path(__file__).parent / "fixtures" / "recorded"
MANIFEST = json.loads((RECORDED / "manifest.json").read_text()) if (RECORDED / "manifest.json").exists() else {}
pytestmark = pytest.mark.skipif(not MANIFEST, reason="no recorded transcripts in tests/fixtures/recorded")


def flag(argv: list[str], *names: str) -> str | None:
    for name in names:
        if name in argv:
            return argv[argv.index(name) + 1]
    return None


def recording(name: str):
    entry = MANIFEST[name]
    argv = entry["argv"]
    max_turns = flag(argv, "--max-turns")
    inv = Invocation(prompt=argv[-1], cwd="/w", model=flag(argv, "--model", "-m") or "", max_turns=int(max_turns) if max_turns else None)
    lines = (RECORDED / name).read_text().splitlines()
    return entry, inv, lines


def parse(name: str):
    entry, inv, lines = recording(name)
    parser = get_provider(entry["cli"]).parser(inv)
    per_line = [parser.feed(line) for line in lines]
    return parser, per_line, entry, [json.loads(line) for line in lines]


def feed_noting_fatal(parser, lines: list[str]) -> int | None:
    """Feed every line to ``parser``; the index of the line after which it first reported a
    fatal error, or ``None``."""
    fatal_at = None
    for index, line in enumerate(lines):
        parser.feed(line)
        if parser.fatal and fatal_at is None:
            fatal_at = index
    return fatal_at


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_every_recorded_line_is_understood(name):
    _, per_line, _, _ = parse(name)

    assert "raw" not in {e.kind for events in per_line for e in events}


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_the_outcome_matches_the_recorded_exit_code(name):
    parser, _, entry, _ = parse(name)

    outcome = parser.finish(exit_code=entry["exit_code"])

    assert outcome.success is (entry["exit_code"] == 0)
    assert outcome.success or outcome.error


def test_claude_write_bash_counts_each_message_once_before_the_result_line():
    _, inv, lines = recording("claude-2.1.197.write-bash-success.jsonl")
    objs = [json.loads(line) for line in lines]
    parser = get_provider("claude").parser(inv)
    for line in lines[:-1]:
        parser.feed(line)
    # One usage per message id, as the CLI itself de-duplicates (the result line then agrees).
    per_id = {o["message"]["id"]: o["message"]["usage"] for o in objs if o["type"] == "assistant"}
    result = objs[-1]

    running = parser.usage
    assert running.input_tokens == sum(u["input_tokens"] for u in per_id.values()) == result["usage"]["input_tokens"]
    assert running.cache_write_tokens == sum(u["cache_creation_input_tokens"] for u in per_id.values()) == result["usage"]["cache_creation_input_tokens"]
    assert running.cache_read_tokens == sum(u["cache_read_input_tokens"] for u in per_id.values()) == result["usage"]["cache_read_input_tokens"]
    # Output tokens only arrive with the result line (stream lines carry the count at message
    # start); with it, the price table prices the run as Claude Code did (up to float rounding).
    parser.feed(lines[-1])
    assert abs(cost_for(inv.model, parser.usage) - Decimal(str(result["total_cost_usd"]))) < Decimal("1e-12")


def test_claude_write_bash_gives_both_tool_calls_with_their_results():
    parser, per_line, _, objs = parse("claude-2.1.197.write-bash-success.jsonl")
    events = [e for batch in per_line for e in batch]
    uses = [b for o in objs if o["type"] == "assistant" for b in o["message"]["content"] if b["type"] == "tool_use"]
    results = [b for o in objs if o["type"] == "user" for b in o["message"]["content"] if b["type"] == "tool_result"]
    result = objs[-1]

    assert [(e.data["id"], e.data["name"]) for e in events if e.kind == "tool_call"] == [(u["id"], u["name"]) for u in uses]
    assert [(e.data["id"], e.data["output"]) for e in events if e.kind == "tool_result"] == [(r["tool_use_id"], r["content"]) for r in results]
    outcome = parser.finish(exit_code=0)
    assert outcome.final_text == result["result"]
    assert outcome.usage.turns == result["num_turns"]
    assert outcome.usage.cost_usd == Decimal(str(result["total_cost_usd"]))


def test_claude_max_turns_names_the_limit_from_the_command_line():
    parser, _, entry, _ = parse("claude-2.1.197.max-turns.jsonl")

    outcome = parser.finish(exit_code=entry["exit_code"])

    assert outcome.error == f"agent hit its turn limit (max turns {flag(entry['argv'], '--max-turns')})"


def test_claude_auth_401_is_fatal_at_the_synthetic_message_and_names_the_status():
    name = "claude-2.1.197.auth-401-no-retries.jsonl"
    entry, inv, lines = recording(name)
    objs = [json.loads(line) for line in lines]
    synthetic = next(i for i, o in enumerate(objs) if o.get("error") == "authentication_failed")
    parser = get_provider("claude").parser(inv)

    fatal_at = feed_noting_fatal(parser, lines)
    outcome = parser.finish(exit_code=entry["exit_code"])

    assert fatal_at == synthetic
    assert outcome.error.startswith(f"agent could not authenticate (HTTP {objs[-1]['api_error_status']} from the model API)")
    assert objs[-1]["result"] in outcome.error
    assert outcome.permanent is True


def test_codex_shell_success_records_the_command_and_the_scripts_input_tokens():
    parser, per_line, entry, objs = parse("codex-0.169.0.shell-success.jsonl")
    events = [e for batch in per_line for e in batch]
    command = next(o["item"] for o in objs if o["type"] == "item.completed" and o["item"]["type"] == "command_execution")
    reported = next(o for o in objs if o["type"] == "turn.completed")["usage"]
    script = yaml.safe_load((ROOT / entry["script"]).read_text())
    scripted = [t["usage"] for c in script["conversations"] for t in c["turns"]]

    call = next(e for e in events if e.kind == "tool_call")
    output = next(e for e in events if e.kind == "tool_result")
    assert call.data == {"id": command["id"], "name": "shell", "input": {"command": command["command"]}}
    assert (output.data["output"], output.data["is_error"]) == (command["aggregated_output"], False)
    u = parser.usage
    assert u.input_tokens == sum(t["input_tokens"] for t in scripted)
    assert u.cache_read_tokens == reported["cached_input_tokens"] == sum(t["cache_read_input_tokens"] for t in scripted)
    assert u.cache_write_tokens == reported["cache_write_input_tokens"] == sum(t["cache_creation_input_tokens"] for t in scripted)
    assert u.output_tokens == reported["output_tokens"]
    assert parser.finish(exit_code=0).final_text == [o["item"]["text"] for o in objs if o.get("item", {}).get("type") == "agent_message"][-1]


def test_codex_auth_401_is_fatal_after_the_retry_limit_of_reconnects(settings):
    settings.TACX = {**settings.TACX, "AUTH_RETRY_LIMIT": 3}
    entry, inv, lines = recording("codex-0.169.0.auth-401.jsonl")
    reconnects = [i for i, line in enumerate(lines) if "Reconnecting..." in line and "401" in line]
    parser = get_provider("codex").parser(inv)

    fatal_at = feed_noting_fatal(parser, lines)
    outcome = parser.finish(exit_code=entry["exit_code"])

    assert fatal_at == reconnects[2]
    assert outcome.error == "agent could not authenticate (HTTP 401 from the model API)"
    assert outcome.permanent is True
