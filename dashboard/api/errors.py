"""One error shape for the whole API: ``{"error": {"code", "message", "field"?}}``.

DRF's default handler answers ``{"detail": ...}`` or a dict of field lists; clients would need
two parsers. Here every handled error becomes one object naming the first offending field, and an
unexpected exception is logged and answered in the same shape rather than with an HTML page.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler

log = logging.getLogger(__name__)


class Conflict(exceptions.APIException):
    """The request is valid but the object's state does not allow it (retry a running task)."""

    status_code = status.HTTP_409_CONFLICT
    default_code = "conflict"
    default_detail = "The object's state does not allow this."


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if field:
        error["field"] = field
    return {"error": error}


def exception_handler(exc: Exception, context: dict) -> Response:
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))

    if not isinstance(exc, exceptions.APIException):
        view = context.get("view")
        log.exception("API error in %s", type(view).__name__ if view else "?", exc_info=exc)
        return Response(error_body("server_error", "Internal error; it has been logged."), status=500)

    # DRF's handler sets the WWW-Authenticate and Retry-After headers; keep them.
    response = drf_exception_handler(exc, context)
    headers = {k: v for k, v in response.headers.items() if k in ("WWW-Authenticate", "Retry-After", "Allow")} if response else {}
    if isinstance(exc, exceptions.ValidationError):
        field, message, code = first_error(exc.detail)
        body = error_body(code or "invalid", f"{field}: {message}" if field else message, field)
    else:
        detail = exc.detail
        message = str(detail if not isinstance(detail, (list, dict)) else first_error(detail)[1])
        code = getattr(detail, "code", None) or exc.default_code
        body = error_body(str(code), message)
    return Response(body, status=exc.status_code, headers=headers)


def first_error(detail: Any, prefix: str = "") -> tuple[str | None, str, str | None]:
    """(field path, message, code) of the first error in a DRF error structure."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = None if key in ("non_field_errors", "__all__") else str(key)
            path = ".".join(p for p in (prefix, name) if p) or None
            field, message, code = first_error(value, path or "")
            return field or path, message, code
        return prefix or None, "Invalid input.", "invalid"
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)):
                return first_error(value, f"{prefix}[{index}]" if prefix else str(index))
            return prefix or None, str(value), getattr(value, "code", None)
        return prefix or None, "Invalid input.", "invalid"
    return prefix or None, str(detail), getattr(detail, "code", None)
