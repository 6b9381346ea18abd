"""Who may open a dashboard page: one decorator for the login, the permission and the methods."""

from __future__ import annotations

from collections.abc import Callable

from django.contrib.auth.decorators import login_required, permission_required


def page_view(permission: str | None, *decorators: Callable[[Callable], Callable]) -> Callable[[Callable], Callable]:
    """A page for a logged-in user holding `permission` (403 without it; None: any logged-in
    user), wrapped in `decorators` (the first outermost)."""

    def wrap(view: Callable) -> Callable:
        for decorator in reversed(decorators):
            view = decorator(view)
        if permission:
            view = permission_required(permission, raise_exception=True)(view)
        return login_required(view)

    return wrap
