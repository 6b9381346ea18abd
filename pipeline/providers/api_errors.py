"""One wording for a model-API failure that a CLI reports with its HTTP status (Gemini CLI, Qwen
Code, opencode): the auth sentence the whole of TAC-X looks for, rate limits, the rest."""

from __future__ import annotations

import re

AUTH_STATUSES = (401, 403)
API_ERROR_STATUS = re.compile(r"API Error: (?:\{[^\n]*?\"code\":\s*)?([45]\d\d)\b")


def http_error_sentence(status: int, detail: str, *, attempts: int | None = None) -> tuple[str, bool]:
    """``(sentence, permanent)`` for a model-API failure with HTTP ``status``: 401/403 cannot
    be fixed by retrying the attempt, 429 and 5xx can."""
    detail = detail.strip()
    tail = f": {detail}" if detail else ""
    if status in AUTH_STATUSES:
        return f"agent could not authenticate (HTTP {status} from the model API){tail}", True
    if status == 429:
        tried = f" after {attempts} attempts" if attempts else ""
        return f"agent's model API kept rate-limiting it (HTTP 429{tried}){tail}", False
    return f"agent's model API returned HTTP {status}{tail}", 400 <= status < 500 and status not in (408, 409)


def status_in_message(message: str) -> int | None:
    """The HTTP status in an "[API Error: 401 …]" / "[API Error: {"error":{"code":401…" text."""
    found = API_ERROR_STATUS.search(message)
    return int(found.group(1)) if found else None
