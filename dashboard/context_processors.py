"""Template context every dashboard page gets."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest


def sandbox(request: HttpRequest) -> dict:
    """`sandbox_mode` for the warning banner: agents running without the sandbox (TACX_SANDBOX=off)
    must be visible on every page."""
    return {"sandbox_mode": str(settings.TACX.get("SANDBOX", "required"))}
