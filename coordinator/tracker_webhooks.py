"""`POST /webhooks/<kind>` for every registered tracker other than GitHub (GitLab, Linear,
Jira): verify, record, answer; the coordinator acts later (`tracker_flow`), as for GitHub.

Order: an unknown kind is a 404; an unconfigured tracker or an unauthentic delivery
(`Tracker.webhook_verify`) a 403, before anything in the body is read; a body that is not a
JSON object, or a payload the tracker finds malformed (`PayloadError`), a 400 naming what was
wrong, with nothing recorded. A delivery is recorded once under "<kind>:<the vendor's delivery
id>" (a redelivery keeps its id and is answered "duplicate"), so the delivery dedup of
`WebhookDelivery` covers every tracker.
"""

from __future__ import annotations

import json
import logging

from django.db import IntegrityError, transaction
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from pipeline.models import Repository
from pipeline.trackers import TRACKERS, PayloadError, TrackerEvent, WebhookRefused, tracker_named
from pipeline.unicode_text import unencodable_field, unencodable_message

from .models import WebhookDelivery

log = logging.getLogger(__name__)


def text(status: int, body: str) -> HttpResponse:
    return HttpResponse(body, status=status, content_type="text/plain")


def delivery_key(kind: str, delivery_id: str) -> str:
    return f"{kind}:{delivery_id}"[:100]


def tracker_delivery_record(*, kind: str, delivery_id: str, events: list[TrackerEvent], ignored: str) -> tuple[int, str]:
    """Record the delivery's events for the coordinator; (status, text) for the answer."""
    key = delivery_key(kind, delivery_id)
    if WebhookDelivery.objects.filter(delivery_id=key).exists():
        return 200, "duplicate"
    if not events:
        return 200, ignored or "ignored"
    first = events[0]
    repository = Repository.objects.filter(pk=first.repository_id).first()
    if repository is None:
        return 200, "ignored: the repository is not registered"
    try:
        with transaction.atomic():
            WebhookDelivery.objects.create(
                delivery_id=key,
                event=kind,
                action=first.action[:50],
                repository_full_name=repository.full_name,
                issue_number=first.issue.number,
                sender=first.actor.login[:100],
                payload={"tracker": kind, "events": [e.to_json() for e in events]},
            )
    except IntegrityError:
        return 200, "duplicate"
    return 202, "accepted"


@csrf_exempt
@require_POST
def tracker_webhook(request: HttpRequest, kind: str) -> HttpResponse:
    if kind not in TRACKERS or kind == Repository.Kind.GITHUB:
        return text(404, f"no tracker {kind!r}")
    tracker = tracker_named(kind)
    if not tracker.configured():
        log.error("%s webhook refused: the tracker is not configured", kind)
        return text(403, f"refused: {tracker.label or kind} is not configured (no token or webhook secret)")
    try:
        tracker.webhook_verify(request.headers, request.body)
    except WebhookRefused as exc:
        log.warning("%s webhook refused: %s", kind, exc)
        return text(403, f"refused: {exc}")
    try:
        payload = json.loads(request.body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return text(400, "the payload is not JSON")
    except RecursionError:
        return text(400, "the payload is nested too deeply")
    if not isinstance(payload, dict):
        return text(400, "the payload is not a JSON object")
    if field := unencodable_field(payload):
        return text(400, f"bad payload: {unencodable_message(field)}")
    try:
        delivery_id = tracker.webhook_delivery_id(request.headers, payload)
        events, ignored = tracker.webhook_parse(request.headers, payload)
    except PayloadError as exc:
        return text(400, f"bad payload: {exc}")
    status, answer = tracker_delivery_record(kind=kind, delivery_id=delivery_id, events=events, ignored=ignored)
    return text(status, answer)
