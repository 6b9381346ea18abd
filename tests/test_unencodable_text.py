"""Text that cannot be encoded (a JSON `\\ud800` escape decodes to a lone surrogate) is a 400
naming the field, at the webhook and at the API, and nothing is recorded.

Issue 19 (item 7): a signed webhook with `"\\ud800"` in `repository.full_name`, `sender.login` or
`action` answered 500 (UnicodeEncodeError at the repository lookup or the delivery's insert).
Dashboard forms cannot receive such text: Django decodes form bodies with replacement characters.
"""

from __future__ import annotations

import json
import logging

import pytest
from conftest import make_origin_and_clone
from github_standin import TOKEN, command_workflow, fixture_bytes, github_repo, sign, standin  # noqa: F401

from coordinator.github_source import GitHubSource
from coordinator.models import WebhookDelivery
from pipeline.github import GitHubClient
from pipeline.models import Repository, Task
from pipeline.unicode_text import unencodable_field

LONE = "\ud800"


@pytest.fixture
def hello_world(db, standin, tmp_path):  # noqa: F811
    standin.add_repo("Codertocat/Hello-World", permissions={"Codertocat": "admin"})
    origin, _ = make_origin_and_clone(tmp_path, "hello", {"README.md": "Hello\n", ".tac/workflow.yaml": command_workflow()})
    return Repository.objects.create(kind=Repository.Kind.GITHUB, full_name="Codertocat/Hello-World", trigger_label="bug", clone_url=str(origin))


def with_text_at(payload: dict, path: str, text: str) -> dict:
    *parents, last = path.split(".")
    node = payload
    for name in parents:
        node = node[name]
    node[last] = text
    return payload


def deliver(client, event: str, payload: dict):
    body = json.dumps(payload).encode()  # ensure_ascii: the surrogate travels as the escape \ud800
    assert b"\\ud800" in body
    headers = {"HTTP_X_GITHUB_EVENT": event, "HTTP_X_GITHUB_DELIVERY": "d-lone", "HTTP_X_HUB_SIGNATURE_256": sign(body)}
    return client.post("/webhooks/github", data=body, content_type="application/json", **headers)


@pytest.mark.parametrize(
    "event, fixture, field",
    [
        ("issues", "issues.labeled", "repository.full_name"),
        ("issues", "issues.labeled", "sender.login"),
        ("issues", "issues.labeled", "action"),
        ("issues", "issues.labeled", "issue.title"),
        ("issues", "issues.labeled", "issue.body"),
        ("issues", "issues.labeled", "label.name"),
        ("issue_comment", "issue_comment.created", "comment.body"),
        ("issue_comment", "issue_comment.created", "repository.full_name"),
    ],
)
def test_a_signed_webhook_with_a_lone_surrogate_is_a_400_naming_the_field(client, hello_world, event, fixture, field):
    payload = with_text_at(json.loads(fixture_bytes(fixture)), field, f"x{LONE}y")
    response = deliver(client, event, payload)
    assert response.status_code == 400, response.content
    assert response.content.decode() == f"bad payload: {field}: not valid Unicode text (a lone surrogate such as \\ud800 cannot be encoded)"
    assert not WebhookDelivery.objects.exists()


def test_a_surrogate_in_a_key_is_named_too():
    assert unencodable_field({"a": [{"b": 1}, {LONE: 2}]}) == "a[1].<key>"
    assert unencodable_field({"a": [{"b": 1}, {"c": ["ok", LONE]}]}) == "a[1].c[1]"
    assert unencodable_field({"a": "é ✓ 😀"}) is None


@pytest.mark.parametrize("field", ["title", "body", "workflow", "repository"])
def test_the_api_answers_400_naming_the_field(client, alice, local_repository, field):
    client.force_login(alice)
    data = {"repository": "sample", "title": "Fine", "body": "fine", "workflow": ""}
    data[field] = f"a{LONE}b"
    response = client.post("/api/tasks/create/", json.dumps(data), content_type="application/json")
    assert response.status_code == 400, response.content
    error = response.json()["error"]
    assert error["field"] == field and "not valid Unicode text" in error["message"], error
    assert not Task.objects.exists()


def test_a_polled_issue_with_a_lone_surrogate_is_skipped_with_the_field_named(github_repo, standin, caplog):  # noqa: F811
    standin.add_issue("octo/sample", number=5, title=f"Fix {LONE}", body="ok", labels=("rpi-auto",), labeled_by="alice")
    standin.add_issue("octo/sample", number=6, title="Fine", body="ok", labels=("rpi-auto",), labeled_by="alice")
    source = GitHubSource(GitHubClient(base_url=standin.url, token=TOKEN), reconcile_grace=0)
    with caplog.at_level(logging.WARNING):
        source.poll(Repository.objects.get(pk=github_repo.pk))
    assert list(Task.objects.values_list("issue_number", flat=True)) == [6]
    assert "octo/sample#5: skipped: issue.title: not valid Unicode text" in caplog.text
