"""What an attempt used (tokens, turns, cost) and the one way helpers outside Django's request
cycle read a TAC-X setting. Shared by the providers and the price table, so neither imports the
other for them.

Token semantics are Claude's: ``Usage.input_tokens`` counts only the input tokens that were
neither read from nor written to the prompt cache, so the prompt size is
``input_tokens + cache_read_tokens + cache_write_tokens``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any


@dataclass
class Usage:
    """Normalised totals for one attempt (Claude token semantics, see the module docstring)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    turns: int = 0
    cost_usd: Decimal | None = None
    model: str = ""
    session_id: str = ""
    cli_version: str = ""


def tacx_setting(name: str, default: Any) -> Any:
    """``settings.TACX[name]``, or ``default`` when unset or when Django is not configured."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    try:
        return settings.TACX.get(name, default)
    except (ImproperlyConfigured, AttributeError):  # parsers also work without Django settings
        return default
