"""The gemini, qwen and opencode parsers over real transcripts: the Gemini CLI 0.61.0 captures
from ``shared/fixtures`` (copied into ``tests/fixtures/transcripts``) and the ones recorded from
the three CLIs against TAC-X's scripted model server (``tests/fixtures/recorded``)."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from pipeline.lib.pricing import cost_for
from pipeline.providers import get_provider
from pipeline.providers.base import Invocation

HERE = Path(__file__).parent
TRANSCRIPTS = HERE / "fixtures" / "transcripts"
RECORDED = HERE / "fixtures" / "recorded"
MANIFEST = json.loads((RECORDED / "manifest.json").read_text())
ROOT = HERE.parent


def parse(provider: str, path: Path, *, exit_code: int, inv: Invocation | None = None):
    parser = get_provider(provider).parser(inv or Invocation(prompt="p", cwd="/w", model="gemini-2.5-pro"))
    events = [e for line in path.read_text().splitlines() for e in parser.feed(line)]
    return parser.finish(exit_code=exit_code), events


def script_sums(script: str) -> dict[str, int]:
    turns = yaml.safe_load((ROOT / script).read_text())["conversations"][0]["turns"]
    total = lambda key: sum(t.get("usage", {}).get(key, 0) for t in turns)  # noqa: E731
    return {"input_tokens": total("input_tokens") + total("cache_creation_input_tokens"), "output_tokens": total("output_tokens"), "cache_read_tokens": total("cache_read_input_tokens"), "cache_write_tokens": 0}


# -- the real Gemini CLI captures ------------------------------------------------------------------
def test_gemini_success_counts_non_cached_input_calls_tools_and_joins_the_text():
    outcome, events = parse("gemini", TRANSCRIPTS / "gemini-0.61.0.success.jsonl", exit_code=0)

    assert outcome.success
    u = outcome.usage
    assert (u.input_tokens, u.cache_read_tokens, u.output_tokens) == (3200, 400, 26)
    assert u.cost_usd == cost_for("gemini-2.5-pro", u)
    assert [e.data["name"] for e in events if e.kind == "tool_call"] == ["write_file", "run_shell_command"]
    assert outcome.final_text == "Writing the plan.done"


def test_gemini_turn_limit_exit_53_names_the_limit():
    inv = Invocation(prompt="p", cwd="/w", model="gemini-2.5-pro", max_turns=2)
    outcome, _ = parse("gemini", TRANSCRIPTS / "gemini-0.61.0.turn_limit.jsonl", exit_code=53, inv=inv)

    assert not outcome.success and not outcome.permanent
    assert outcome.error.startswith("agent hit its turn limit (max turns 2")
    assert outcome.usage.input_tokens == 2100


def test_gemini_401_exit_145_is_an_authentication_failure():
    outcome, _ = parse("gemini", TRANSCRIPTS / "gemini-0.61.0.auth401.jsonl", exit_code=145)

    assert outcome.error.startswith("agent could not authenticate (HTTP 401 from the model API)")
    assert outcome.permanent


def test_gemini_429_exit_173_is_a_retryable_rate_limit():
    outcome, _ = parse("gemini", TRANSCRIPTS / "gemini-0.61.0.e429_max3.jsonl", exit_code=173)

    assert "HTTP 429" in outcome.error and "Resource has been exhausted" in outcome.error
    assert not outcome.permanent


def test_gemini_error_status_with_exit_0_is_a_failure():
    outcome, events = parse("gemini", TRANSCRIPTS / "gemini-0.61.0.e_empty.jsonl", exit_code=0)

    assert not outcome.success
    assert "empty response" in outcome.error
    assert outcome.usage.input_tokens == 4400  # the four empty answers still cost their prompts
    assert [e.data["is_error"] for e in events if e.kind == "result"] == [True]


# -- recorded against the scripted server ----------------------------------------------------------
def recorded(cli: str, name: str):
    file = next(f for f, e in MANIFEST.items() if e["cli"] == cli and f.endswith(f".{name}.jsonl"))
    entry = MANIFEST[file]
    inv = Invocation(prompt="p", cwd="/w", model=entry["model"], max_turns=entry.get("max_turns"))
    outcome, events = parse(cli, RECORDED / file, exit_code=entry["exit_code"], inv=inv)
    return entry, outcome, events, [json.loads(line) for line in (RECORDED / file).read_text().splitlines()]


@pytest.mark.parametrize("cli", ["gemini", "qwen", "opencode"])
def test_a_recorded_success_has_the_scripts_usage_exactly_and_both_tools(cli):
    entry, outcome, events, _ = recorded(cli, "write-bash-success")

    assert outcome.success, outcome.error
    u = outcome.usage
    # Reasoning tokens are part of output_tokens in the script and in TAC-X, whatever the API says.
    assert {k: getattr(u, k) for k in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")} == script_sums(entry["script"])
    assert u.turns == 3  # one call per response: write, shell, final text
    names = [e.data["name"] for e in events if e.kind == "tool_call"]
    assert len(names) == 2 and names[0] in ("write_file", "write") and names[1] in ("run_shell_command", "bash")
    results = [e.data for e in events if e.kind == "tool_result"]
    assert [r["is_error"] for r in results] == [False, False]
    assert outcome.final_text.endswith("Plan written and committed.")  # gemini joins every delta


def test_qwen_takes_its_version_from_the_init_line():
    _, outcome, _, lines = recorded("qwen", "write-bash-success")

    assert outcome.usage.cli_version == lines[0]["qwen_code_version"] == "0.24.4"


def test_opencode_cost_is_the_sum_of_its_step_costs():
    _, outcome, _, lines = recorded("opencode", "write-bash-success")

    steps = [line["part"]["cost"] for line in lines if line["type"] == "step_finish"]
    assert len(steps) == 3 and sum(steps) > 0
    assert outcome.usage.cost_usd == sum(Decimal(str(c)) for c in steps)
    assert abs(outcome.usage.cost_usd - cost_for("glm-4.6", outcome.usage)) < Decimal("0.000001")


@pytest.mark.parametrize("cli", ["gemini", "qwen", "opencode"])
def test_a_recorded_401_is_a_permanent_authentication_failure(cli):
    _, outcome, _, _ = recorded(cli, "auth-401")

    assert outcome.error.startswith("agent could not authenticate (HTTP 401 from the model API)")
    assert outcome.permanent


@pytest.mark.parametrize("cli", ["gemini", "qwen", "opencode"])
def test_a_recorded_429_is_a_retryable_rate_limit(cli):
    _, outcome, _, _ = recorded(cli, "rate-limit-429")

    assert "HTTP 429" in outcome.error and not outcome.permanent


@pytest.mark.parametrize("cli", ["gemini", "qwen"])
def test_a_recorded_turn_limit_names_the_limit(cli):
    _, outcome, _, _ = recorded(cli, "turn-limit")

    assert "turn limit (max turns 2" in outcome.error
    assert outcome.usage.input_tokens == 100 + 101


@pytest.mark.parametrize("cli", ["gemini", "qwen", "opencode"])
def test_an_error_the_cli_reports_is_a_failure_even_with_exit_code_0(cli):
    file = next(f for f, e in MANIFEST.items() if e["cli"] == cli and f.endswith(".auth-401.jsonl"))
    inv = Invocation(prompt="p", cwd="/w", model=MANIFEST[file]["model"])

    outcome, _ = parse(cli, RECORDED / file, exit_code=0, inv=inv)

    assert not outcome.success
    assert "could not authenticate" in outcome.error


def test_opencode_stops_the_run_at_its_turn_limit_as_soon_as_it_asks_for_more():
    lines = (RECORDED / "opencode-1.18.33.write-bash-success.jsonl").read_text().splitlines()
    parser = get_provider("opencode").parser(Invocation(prompt="p", cwd="/w", model="glm-4.6", max_turns=2))
    fatal_after = None
    for n, line in enumerate(lines):
        parser.feed(line)
        if parser.fatal and fatal_after is None:
            fatal_after = n
    # The second step_finish ends with reason "tool-calls": the agent wants a third call.
    second_step = [n for n, line in enumerate(lines) if json.loads(line)["type"] == "step_finish"][1]
    assert fatal_after == second_step
    assert parser.fatal == "agent hit its turn limit (max turns 2)"
