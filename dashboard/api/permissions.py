"""Django model permissions for the API, one per view (see "Roles" in the README).

Each view names the permission it needs in `required_permission`; a view that names none needs
`pipeline.view_task` (deny by default: a new view is not open to every logged-in user).
"""

from __future__ import annotations

from rest_framework.permissions import BasePermission

DEFAULT = "pipeline.view_task"


class HasRequiredPermission(BasePermission):
    message = "You do not have permission to do this."

    def has_permission(self, request, view) -> bool:
        required = getattr(view, "required_permission", DEFAULT)
        if required is None:
            return True
        self.message = f"This needs the permission {required}."
        return bool(request.user and request.user.has_perm(required))
