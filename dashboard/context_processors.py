"""Template context every dashboard page needs."""

from __future__ import annotations

from django.http import HttpRequest

from pipeline import sandbox


def sandbox_state(request: HttpRequest) -> dict:
    """``sandbox``: the agent sandbox's mode and whether it can be set up, for the banner that
    warns when agents run unsandboxed (``TACX_SANDBOX=off``) or cannot run at all."""
    if not getattr(request, "user", None) or not request.user.is_authenticated:
        return {}
    return {"sandbox": sandbox.status()}
