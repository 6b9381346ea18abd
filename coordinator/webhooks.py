"""`POST /webhooks/github`: verify, record, answer. Everything slower happens in the coordinator
(see `deliveries`), so GitHub gets its answer in milliseconds, far inside its 10 s.

Nothing is looked at before the signature checks out: HMAC-SHA256 of the raw body with
GITHUB_WEBHOOK_SECRET, compared in constant time. Without a configured secret every delivery
is refused (an unsigned endpoint would let anyone start agents).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from pipeline.unicode_text import unencodable_field, unencodable_message

from .deliveries import delivery_record

log = logging.getLogger(__name__)


def signature_for(secret: str, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for `body`."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def signature_valid(secret: str, body: bytes, header: str) -> bool:
    if not secret or not header:
        return False
    return hmac.compare_digest(signature_for(secret, body).encode(), header.encode("utf-8", "replace"))


def parse_payload(request: HttpRequest) -> dict:
    """The JSON payload, sent as `application/json` or form-encoded as `payload=` (both are
    webhook content types GitHub offers). Raises ValueError when it is not JSON; a JSON value
    that is not an object counts as an empty payload (nothing to act on)."""
    if request.content_type == "application/x-www-form-urlencoded":
        raw = request.POST.get("payload", "")
    else:
        raw = request.body.decode("utf-8")
    data = json.loads(raw)
    return data if isinstance(data, dict) else {}


@csrf_exempt
@require_POST
def github_webhook(request: HttpRequest) -> HttpResponse:
    secret = settings.GITHUB_WEBHOOK_SECRET
    if not secret:
        log.error("GitHub webhook refused: GITHUB_WEBHOOK_SECRET is not set")
        return HttpResponse("refused: no webhook secret is configured", status=403, content_type="text/plain")
    if not signature_valid(secret, request.body, request.headers.get("X-Hub-Signature-256", "")):
        log.warning("GitHub webhook refused: missing or wrong signature (delivery %s)", request.headers.get("X-GitHub-Delivery", "?"))
        return HttpResponse("refused: missing or wrong signature", status=403, content_type="text/plain")
    event = request.headers.get("X-GitHub-Event", "")
    delivery_id = request.headers.get("X-GitHub-Delivery", "")
    if not event or not delivery_id:
        return HttpResponse("X-GitHub-Event and X-GitHub-Delivery are required", status=400, content_type="text/plain")
    if event == "ping":
        return HttpResponse("pong", content_type="text/plain")
    try:
        payload = parse_payload(request)
    except (ValueError, UnicodeDecodeError):
        return HttpResponse("the payload is not JSON", status=400, content_type="text/plain")
    except RecursionError:
        return HttpResponse("the payload is nested too deeply", status=400, content_type="text/plain")
    if field := unencodable_field(payload):
        return HttpResponse(f"bad payload: {unencodable_message(field)}", status=400, content_type="text/plain")
    answer = delivery_record(delivery_id=delivery_id[:100], event=event, payload=payload)
    return HttpResponse(answer.text, status=answer.status, content_type="text/plain")
