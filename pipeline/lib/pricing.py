"""The one price table of TAC-X: USD per million tokens, per model.

Used for CLIs that report no cost (Codex, Gemini) and for the live estimate of a Claude run before
its final ``result`` line brings the CLI's own ``total_cost_usd``. ``cost_for`` returns ``None``
for a model it does not know: an unknown price is shown as unknown, never guessed.

Token semantics are TAC-X's (Claude's): ``input`` is the non-cached input, ``cache_read`` and
``cache_write`` the cached parts. OpenAI and Google charge nothing extra for writing their
automatic prompt caches, so their ``cache_write`` equals the input price. Prices are the
standard-tier list prices for prompts up to 200k tokens (Sonnet 4.5 and Gemini 2.5 Pro cost more
above that; the table does not model long-context tiers).

``settings.TACX["PRICES"]`` (optional) adds or replaces entries: ``{"model-id": {"input": "3",
"output": "15", "cache_read": "0.3", "cache_write": "3.75"}}`` or a 4-sequence in that order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from .usage import Usage, tacx_setting

MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""

    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal


def _p(input: str, output: str, cache_read: str, cache_write: str | None = None) -> Price:
    return Price(Decimal(input), Decimal(output), Decimal(cache_read), Decimal(cache_write or input))


DEFAULT_PRICES: dict[str, Price] = {
    # Anthropic (cache_write = 5-minute cache writes, 1.25 x input)
    "claude-opus-4-5": _p("5", "25", "0.50", "6.25"),
    "claude-opus-4-1": _p("15", "75", "1.50", "18.75"),
    "claude-opus-4-0": _p("15", "75", "1.50", "18.75"),
    "claude-opus-4": _p("15", "75", "1.50", "18.75"),
    "claude-sonnet-4-5": _p("3", "15", "0.30", "3.75"),
    "claude-sonnet-4-0": _p("3", "15", "0.30", "3.75"),
    "claude-sonnet-4": _p("3", "15", "0.30", "3.75"),
    "claude-3-7-sonnet": _p("3", "15", "0.30", "3.75"),
    "claude-haiku-4-5": _p("1", "5", "0.10", "1.25"),
    "claude-3-5-haiku": _p("0.80", "4", "0.08", "1"),
    # OpenAI
    "gpt-5": _p("1.25", "10", "0.125"),
    "gpt-5-codex": _p("1.25", "10", "0.125"),
    "gpt-5-mini": _p("0.25", "2", "0.025"),
    "gpt-5-nano": _p("0.05", "0.40", "0.005"),
    "gpt-5.1": _p("1.25", "10", "0.125"),
    "gpt-5.1-codex": _p("1.25", "10", "0.125"),
    "gpt-5.1-codex-mini": _p("0.25", "2", "0.025"),
    "codex-mini-latest": _p("1.50", "6", "0.375"),
    "o3": _p("2", "8", "0.50"),
    "o4-mini": _p("1.10", "4.40", "0.275"),
    "gpt-4.1": _p("2", "8", "0.50"),
    "gpt-4.1-mini": _p("0.40", "1.60", "0.10"),
    "gpt-4o": _p("2.50", "10", "1.25"),
    # Google
    "gemini-2.5-pro": _p("1.25", "10", "0.125"),
    "gemini-2.5-flash": _p("0.30", "2.50", "0.03"),
    "gemini-2.5-flash-lite": _p("0.10", "0.40", "0.01"),
    "gemini-3-pro-preview": _p("2", "12", "0.20"),
    # Alibaba Model Studio (international), the tier for prompts up to 32k tokens; Qwen Code
    # reports no cost, so this table is its only price.
    "qwen3-coder-plus": _p("1", "5", "0.10"),
    "qwen3-coder-flash": _p("0.30", "1.50", "0.03"),
    "qwen3-max": _p("1.20", "6", "0.12"),
    # Models people commonly run through opencode (which prices calls itself from the ``cost``
    # TAC-X writes into its configuration from this table).
    "glm-4.6": _p("0.60", "2.20", "0.11"),
    "kimi-k2": _p("0.60", "2.50", "0.15"),
}

# What may follow a table key in a model id and still be the same model: a release date
# ("claude-sonnet-4-5-20250929", "gpt-5-2025-08-07", Vertex "@20250929") or "-latest".
_SUFFIX = re.compile(r"(?:[-@]\d{8}|-\d{4}-\d{2}-\d{2}|-latest)?")


def _price(value: Any) -> Price:
    if isinstance(value, Price):
        return value
    if isinstance(value, Mapping):
        parts = [value["input"], value["output"], value.get("cache_read", value["input"]), value.get("cache_write", value["input"])]
    else:
        parts = list(value)
    return Price(*(Decimal(str(p)) for p in parts))


def price_table() -> dict[str, Price]:
    """``DEFAULT_PRICES`` with ``settings.TACX["PRICES"]`` applied on top (ignored if malformed)."""
    table = dict(DEFAULT_PRICES)
    for model, value in (tacx_setting("PRICES", None) or {}).items():
        try:
            table[str(model).lower()] = _price(value)
        except (KeyError, TypeError, ValueError, InvalidOperation):
            continue
    return table


def price_for(model: str) -> Price | None:
    """The price of ``model``: an exact key, else the longest key the id starts with followed only
    by a date suffix. A provider prefix ("openai/gpt-5") is dropped. ``None`` when unknown."""
    name = (model or "").strip().lower().rsplit("/", 1)[-1]
    if not name:
        return None
    table = price_table()
    if name in table:
        return table[name]
    for key in sorted(table, key=len, reverse=True):
        if name.startswith(key) and _SUFFIX.fullmatch(name[len(key) :]):
            return table[key]
    return None


def cost_for(model: str, usage: Usage) -> Decimal | None:
    """USD cost of ``usage`` at ``model``'s list price, or ``None`` for an unknown model."""
    price = price_for(model)
    if price is None:
        return None
    total = (
        usage.input_tokens * price.input
        + usage.output_tokens * price.output
        + usage.cache_read_tokens * price.cache_read
        + usage.cache_write_tokens * price.cache_write
    )
    return total / MILLION
