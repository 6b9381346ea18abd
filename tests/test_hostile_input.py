"""Hostile input gets a 4xx (or a websocket close) with a message, never a 500.

Issue 9 (item 5): correctly signed webhook payloads with a non-numeric or oversized issue
number, a sender login over 100 characters or a string where an object belongs; JSON nested
100,000 deep; `?repository=¹` and `?search=#¹` (``str.isdigit()`` then ``int()``); websocket
paths that match no route.
"""

from __future__ import annotations

import json

import pytest
from asgiref.sync import async_to_sync
from channels.testing import WebsocketCommunicator
from django.test import Client
from github_standin import fixture_bytes, sign, standin  # noqa: F401

from coordinator.models import WebhookDelivery
from pipeline.models import Repository
from tacx_site.asgi import application

URL = "/webhooks/github"


@pytest.fixture
def hello_world(db, standin):  # noqa: F811
    return Repository.objects.create(kind=Repository.Kind.GITHUB, full_name="Codertocat/Hello-World", trigger_label="bug")


def labeled(**changes) -> dict:
    payload = json.loads(fixture_bytes("issues.labeled"))
    for path, value in changes.items():
        target = payload
        *parents, leaf = path.split("__")
        for key in parents:
            target = target[key]
        target[leaf] = value
    return payload


def deliver(client, body: bytes, delivery: str = "d-1"):
    return client.post(
        URL, data=body, content_type="application/json",
        HTTP_X_GITHUB_EVENT="issues", HTTP_X_GITHUB_DELIVERY=delivery, HTTP_X_HUB_SIGNATURE_256=sign(body),
    )


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"issue__number": "12abc"}, "issue.number"),
        ({"issue__number": 10**30}, "issue.number"),
        ({"issue__number": 2**31}, "issue.number"),
        ({"issue__number": True}, "issue.number"),
        ({"issue__number": -1}, "issue.number"),
        ({"sender__login": "x" * 101}, "sender.login"),
        ({"sender": "Codertocat"}, "sender must be an object"),
        ({"issue": "#1"}, "issue must be an object"),
        ({"repository": "Codertocat/Hello-World"}, "repository must be an object"),
        ({"label": ["bug"]}, "label must be an object"),
        ({"issue__title": {"a": 1}}, "issue.title"),
        ({"issue__labels": "bug"}, "issue.labels"),
        ({"repository__full_name": 5}, "repository.full_name"),
    ],
)
def test_a_signed_payload_of_the_wrong_shape_is_a_400_with_the_reason(client, hello_world, changes, message):
    response = deliver(client, json.dumps(labeled(**changes)).encode())
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not WebhookDelivery.objects.exists()


def test_a_signed_payload_nested_100000_deep_is_a_400(client, hello_world):
    body = b"[" * 100_000 + b"]" * 100_000
    response = deliver(client, body)
    assert response.status_code == 400 and b"nested too deeply" in response.content


def test_the_well_formed_payload_is_still_accepted(client, hello_world):
    assert deliver(client, json.dumps(labeled()).encode()).status_code == 202
    assert WebhookDelivery.objects.get().issue_number == 1


@pytest.fixture
def logged_in(alice, local_repository) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def test_json_nested_100000_deep_on_task_create_is_a_400_in_the_error_shape(logged_in):
    response = logged_in.post("/api/tasks/create/", data="[" * 100_000 + "]" * 100_000, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "parse_error" and "nested too deeply" in response.json()["error"]["message"]


@pytest.mark.parametrize("query", ["repository=¹", "repository=٣", "search=%23¹", "search=¹²", "search=%23٣"])
def test_unicode_digits_in_filters_are_plain_text_on_the_api_and_the_list_page(logged_in, query):
    api = logged_in.get(f"/api/tasks/?{query}")
    assert api.status_code == 200 and api.json()["count"] == 0
    page = logged_in.get(f"/?{query}")
    assert page.status_code == 200


def socket(path: str, session: str) -> WebsocketCommunicator:
    return WebsocketCommunicator(application, path, headers=[(b"host", b"testserver"), (b"origin", b"http://testserver"), (b"cookie", f"sessionid={session}".encode())])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("path", ["/ws/nothing/", "/", "/ws/tasks/abc/events/", "/ws/tasks/99999999999999999999999/events/"])
def test_a_websocket_path_that_matches_no_route_is_closed_with_4404(alice, path):
    client = Client()
    client.force_login(alice)
    session = client.cookies["sessionid"].value

    async def scenario():
        return await socket(path, session).connect()

    assert async_to_sync(scenario)() == (False, 4404)
