"""Redaction of secrets from text that TAC-X stores, logs or shows.

Token formats follow claude-code-action's ``redactSecrets`` (GitHub tokens, Anthropic and OpenAI
keys, AWS key ids, Slack tokens, JWTs), made length-agnostic. On top of the patterns, the values
of secret settings and environment variables seen by this process are redacted literally, and
so are the secrets one stage attempt was given (its MCP servers'), while that attempt is being
recorded (`attempt_secrets`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache

REDACTED = "[REDACTED]"

_PATTERNS = [
    r"gh[pousr]_[A-Za-z0-9_]{16,}",
    r"github_pat_[A-Za-z0-9_]{20,}",
    r"sk-ant-[A-Za-z0-9_\-]{10,}",
    r"sk-(?:proj-)?[A-Za-z0-9_\-]{20,}",
    r"(?:AKIA|ASIA)[A-Z0-9]{16}",
    r"xox[abposr]-[A-Za-z0-9\-]{10,}",
    r"eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}",
]
_PATTERN = re.compile("|".join(f"(?:{p})" for p in _PATTERNS))

# Environment variables whose values are secrets wherever they appear.
SECRET_ENV_NAMES = re.compile(r"(TOKEN|SECRET|PASSWORD|API_KEY|APIKEY|PRIVATE_KEY|CREDENTIAL)", re.I)


@lru_cache(maxsize=1)
def _literal_secrets() -> tuple[str, ...]:
    values = {v for k, v in os.environ.items() if SECRET_ENV_NAMES.search(k) and len(v) >= 8}
    try:
        from django.conf import settings

        for name in ("GITHUB_TOKEN", "GITHUB_WEBHOOK_SECRET", "GITHUB_APP_PRIVATE_KEY", "GITLAB_TOKEN", "GITLAB_WEBHOOK_SECRET"):
            value = getattr(settings, name, "")
            if value and len(value) >= 8:
                values.add(value)
    except Exception:  # settings not configured: patterns still apply
        pass
    # Longest first so a secret containing another is replaced whole.
    return tuple(sorted(values, key=len, reverse=True))


# The secrets handed to the stage attempt this thread is running (see `attempt_secrets`).
_attempt_secrets: ContextVar[tuple[str, ...]] = ContextVar("tacx_attempt_secrets", default=())


@contextmanager
def attempt_secrets() -> Iterator[None]:
    """The scope of one stage attempt: values added with `attempt_secrets_add` inside it are
    redacted like TAC-X's own secrets until it ends."""
    token = _attempt_secrets.set(())
    try:
        yield
    finally:
        _attempt_secrets.reset(token)


def attempt_secrets_add(values: Iterable[str]) -> None:
    """Redact these values too for the rest of the attempt (8 characters or more, as above)."""
    found = {*_attempt_secrets.get(), *(v for v in values if len(v) >= 8)}
    _attempt_secrets.set(tuple(sorted(found, key=len, reverse=True)))


def refresh_literal_secrets() -> None:
    """Forget cached secret values (tests change the environment)."""
    _literal_secrets.cache_clear()


def redact(text: str) -> str:
    """Secrets replaced by [REDACTED]; NUL characters (which PostgreSQL text and JSONB refuse)
    replaced by U+FFFD, so whatever an agent prints can be stored."""
    if not text:
        return text
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    for value in (*_attempt_secrets.get(), *_literal_secrets()):
        if value in text:
            text = text.replace(value, REDACTED)
    return _PATTERN.sub(REDACTED, text)


def redact_data(value):
    """Redact every string inside a JSON-like structure."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: redact_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_data(v) for v in value]
    return value


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
