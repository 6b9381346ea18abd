"""The price table: exact and dated model ids, unknown models unpriced, settings overrides."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.lib.pricing import DEFAULT_PRICES, cost_for, price_for
from pipeline.providers.base import Usage

FIXTURES = Path(__file__).parent / "fixtures" / "transcripts"


@pytest.mark.parametrize(
    ("model", "key"),
    [
        ("claude-sonnet-4-5", "claude-sonnet-4-5"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-opus-4-1-20250805", "claude-opus-4-1"),
        ("claude-haiku-4-5@20251001", "claude-haiku-4-5"),
        ("gpt-5-2025-08-07", "gpt-5"),
        ("gpt-5-mini", "gpt-5-mini"),
        ("openai/gpt-5-codex", "gpt-5-codex"),
        ("GEMINI-2.5-FLASH", "gemini-2.5-flash"),
    ],
)
def test_dated_and_prefixed_ids_find_their_model(model, key):
    assert price_for(model) == DEFAULT_PRICES[key]


@pytest.mark.parametrize("model", ["", "auto", "sonnet", "gpt-5-turbo-preview", "claude-sonnet-4-5-fast", "llama-3"])
def test_an_unknown_model_has_no_price_rather_than_a_guess(model):
    assert price_for(model) is None
    assert cost_for(model, Usage(input_tokens=1000)) is None


def test_the_cost_adds_each_token_kind_at_its_own_price():
    usage = Usage(input_tokens=1234, output_tokens=567, cache_read_tokens=8900, cache_write_tokens=12)
    price = DEFAULT_PRICES["claude-opus-4-5"]

    expected = (1234 * price.input + 567 * price.output + 8900 * price.cache_read + 12 * price.cache_write) / Decimal(10**6)
    assert cost_for("claude-opus-4-5-20251101", usage) == expected


@pytest.mark.parametrize("name", ["claude-2.1.197.tool-use-success.jsonl", "claude-2.1.197.max-turns.jsonl"])
def test_the_table_agrees_with_the_cost_claude_code_reported(name):
    result = json.loads((FIXTURES / name).read_text().splitlines()[-1])
    (model, figures), = result["modelUsage"].items()
    usage = Usage(
        input_tokens=figures["inputTokens"],
        output_tokens=figures["outputTokens"],
        cache_read_tokens=figures["cacheReadInputTokens"],
        cache_write_tokens=figures["cacheCreationInputTokens"],
    )

    assert cost_for(model, usage) == Decimal(str(result["total_cost_usd"]))


def test_settings_can_add_and_override_prices(settings):
    settings.TACX = {**settings.TACX, "PRICES": {"my-local-model": {"input": "0.5", "output": "1"}, "gpt-5": ["2", "20", "0.2", "2"]}}

    local = price_for("my-local-model")
    assert (local.input, local.output, local.cache_read, local.cache_write) == (Decimal("0.5"), Decimal(1), Decimal("0.5"), Decimal("0.5"))
    assert price_for("gpt-5").output == Decimal(20)
    assert price_for("gpt-5-mini") == DEFAULT_PRICES["gpt-5-mini"]


def test_a_malformed_settings_price_is_ignored(settings):
    settings.TACX = {**settings.TACX, "PRICES": {"gpt-5": {"input": "cheap"}, "x": 5}}

    assert price_for("gpt-5") == DEFAULT_PRICES["gpt-5"]
    assert price_for("x") is None
