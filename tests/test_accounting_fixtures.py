"""Token and cost accounting per CLI: each fixture in tests/fixtures/accounting gives exactly the
usage listed in its expected.json, and a cost derived from the price table."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.lib.pricing import cost_for
from pipeline.providers import Invocation, Usage, get_provider

FIXTURES = Path(__file__).parent / "fixtures" / "accounting"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())["cases"]
SCRIPTS = json.loads((FIXTURES / "scripts.json").read_text())
TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


def parse(name: str, *, until_type: str | None = None):
    """The parser after the fixture's lines (up to, not including, the first ``until_type`` line)."""
    case = EXPECTED[name]
    parser = get_provider(case["provider"]).parser(Invocation(prompt="", cwd="/work/tree", model=case["model"]))
    events = []
    for line in (FIXTURES / name).read_text().splitlines():
        if until_type and json.loads(line)["type"] == until_type:
            break
        events += parser.feed(line)
    return parser, events


def price_table_cost(model: str, tokens: dict[str, int]) -> Decimal:
    cost = cost_for(model, Usage(**tokens))
    assert cost is not None, f"no price for {model}"
    return cost


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_fixture_gives_exactly_the_expected_tokens_and_the_price_table_cost(name):
    case = EXPECTED[name]
    parser, events = parse(name)
    outcome = parser.finish(exit_code=0)

    assert outcome.success, outcome.error
    usage = outcome.usage
    assert {k: getattr(usage, k) for k in TOKENS} == case["tokens"]
    assert usage.turns == case["turns"]
    assert usage.model == case["model"]
    expected_cost = price_table_cost(case["model"], case["tokens"])
    if case["cost_reported"]:
        # Claude Code prices the run itself; its figure (a float) agrees with the table.
        reported = Decimal(str(json.loads((FIXTURES / name).read_text().splitlines()[-1])["total_cost_usd"]))
        assert usage.cost_usd == reported
        assert abs(reported - expected_cost) < Decimal("1e-12")
    else:
        assert usage.cost_usd == expected_cost
    # The last usage event the runner saw carries the same figures.
    last = [e.data for e in events if e.kind == "usage"][-1]
    assert {k: last[k] for k in TOKENS} == case["tokens"]


@pytest.mark.parametrize("name", ["claude-2.1.197.partial-messages.jsonl", "codex-0.169.0.two-responses.jsonl"])
def test_recorded_fixtures_agree_with_the_scripts_that_produced_them(name):
    """The expected figures are the scripted turns' usage under each CLI's semantics."""
    case = EXPECTED[name]
    turns = SCRIPTS[case["provider"]]["conversations"][0]["turns"]

    def total(field: str) -> int:
        return sum(t.get("usage", {}).get(field, 0) for t in turns)

    assert case["tokens"] == {
        "input_tokens": total("input_tokens"),  # the script's input excludes cache, as TAC-X's does
        "output_tokens": total("output_tokens"),
        "cache_read_tokens": total("cache_read_input_tokens"),
        "cache_write_tokens": total("cache_creation_input_tokens"),
    }


def test_claude_usage_is_exact_and_priced_live_before_the_result_line():
    """With --include-partial-messages every message's output count arrives as it ends, so the
    budget meter sees the whole spend (priced from the table) before Claude's own total."""
    name = "claude-2.1.197.partial-messages.jsonl"
    case = EXPECTED[name]
    parser, events = parse(name, until_type="result")

    live = parser.usage
    assert {k: getattr(live, k) for k in TOKENS} == case["tokens"]
    assert live.cost_usd == price_table_cost(case["model"], case["tokens"])
    usages = [e.data for e in events if e.kind == "usage"]
    # One event when each of the 3 messages starts and one when it ends; totals only grow.
    assert len(usages) == 6
    costs = [Decimal(u["cost_usd"]) for u in usages]
    assert costs == sorted(costs) and costs[0] > 0
    # The stream events themselves are not kept as transcript events.
    assert not [e for e in events if e.kind == "raw"]


def test_codex_usage_is_the_latest_cumulative_figure_never_a_sum():
    parser, events = parse("codex-hand-built.two-turns-cumulative.jsonl")
    first, second = [e.data for e in events if e.kind == "usage"]

    assert first["input_tokens"] == 2000 - 500
    assert second["input_tokens"] == 5000 - 2500 - 300
    assert parser.usage.input_tokens == second["input_tokens"]
