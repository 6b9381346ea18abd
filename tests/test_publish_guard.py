"""The publish guard: the values of TAC-X's secrets are found raw and encoded (hex, URL encoding,
base64 at every alignment, wrapped), short values are ignored, the message never carries the
value; a forge write carrying one is not sent (the stand-in receives nothing) and alerts."""

from __future__ import annotations

import base64
import textwrap
import time
from urllib.parse import quote, quote_plus

import pytest
from django.core import mail
from github_standin import standin  # noqa: F401
from rest_framework.authtoken.models import Token

from pipeline import publish_guard
from pipeline.github import GitHubClient, GitHubError
from pipeline.publish_guard import MIN_SECRET_LENGTH, PublishBlocked, scan

pytestmark = pytest.mark.django_db

CANARY = "sk-ant-CANARY-7f3a9c1e5b2d4f60a8e7"


@pytest.fixture
def canary(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", CANARY)
    return CANARY


def found(text: str | bytes):
    data = text.encode() if isinstance(text, str) else text
    return scan([("src/x.py", data)])


@pytest.mark.parametrize("prefix", [b"", b"a", b"ab"])  # the three alignments
@pytest.mark.parametrize("urlsafe", [False, True])
def test_base64_at_every_alignment_in_both_alphabets_is_found(canary, prefix, urlsafe):
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    hit = found(b"data = '" + encode(prefix + canary.encode() + b"?>~") + b"'\n")
    assert hit is not None and hit.secret == "ANTHROPIC_API_KEY" and hit.encoding.startswith("base64")
    assert hit.where == "src/x.py"


def test_wrapped_base64_and_hex_split_by_spaces_are_found(canary):
    wrapped = "\n".join(textwrap.wrap(base64.b64encode(b"xy" + canary.encode()).decode(), 8))
    assert found(f"blob:\n{wrapped}\n").encoding == "base64"
    spaced = " ".join(canary.encode().hex()[i : i + 2] for i in range(0, 2 * len(canary), 2))
    assert found(f"bytes: {spaced}").encoding == "hex"


@pytest.mark.parametrize("encode", [lambda v: v.encode().hex(), lambda v: v.encode().hex().upper()], ids=["hex", "HEX"])
def test_hex_in_either_case_is_found(canary, encode):
    hit = found(f"x = bytes.fromhex('{encode(canary)}')")
    assert hit is not None and hit.encoding == "hex"


@pytest.mark.parametrize(
    "encode",
    [
        lambda v: quote(v, safe=""),
        lambda v: quote_plus(v),
        lambda v: "".join(f"%{b:02X}" for b in v.encode()),
        lambda v: "".join(f"%{b:02x}" for b in v.encode()),
    ],
    ids=["quote", "quote_plus", "all-upper", "all-lower"],
)
def test_url_encoded_values_are_found(monkeypatch, encode):
    secret = "p@ss/word+with spaces&more=1"
    monkeypatch.setenv("DATABASE_URL", f"postgres://tacx:{quote(secret, safe='')}@db.example/tacx")
    hit = found(f"https://evil.example/?q={encode(secret)}")
    assert hit is not None and hit.secret.startswith("DATABASE_URL") and hit.encoding == "URL-encoded"


def test_raw_values_of_settings_tokens_and_the_app_key_are_found(settings, tmp_path, django_user_model):
    settings.GITHUB_WEBHOOK_SECRET = "whsec-0123456789abcdef"
    assert found("the secret is whsec-0123456789abcdef").secret == "GITHUB_WEBHOOK_SECRET"
    user = django_user_model.objects.create_user("bob")
    token = Token.objects.create(user=user)
    assert found(f"Authorization: Token {token.key}").secret == "the API token of user 'bob'"
    key = tmp_path / "app.pem"
    body = base64.b64encode(bytes(range(256)) * 3).decode()
    lines = textwrap.wrap(body, 64)
    key.write_text("-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END RSA PRIVATE KEY-----\n")
    settings.GITHUB_APP_PRIVATE_KEY_FILE = str(key)
    assert "GitHub App private key" in found(f"# {lines[5]}\n").secret  # one PEM line
    assert found(b"\x00\x01" + (bytes(range(256)) * 3) + b"\x02") is not None  # the whole DER key, binary


def test_short_values_are_ignored_and_the_message_never_carries_the_value(monkeypatch, settings):
    monkeypatch.setenv("OPENAI_API_KEY", "x" * (MIN_SECRET_LENGTH - 1))
    assert found("x" * 100) is None
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    with pytest.raises(PublishBlocked) as blocked:
        publish_guard.check_text("plan:\n" + base64.b64encode(CANARY.encode()).decode(), "the pull request body")
    message = str(blocked.value)
    assert message == "the pull request body contains the value of OPENAI_API_KEY (base64); it was not published"
    assert CANARY not in message and base64.b64encode(CANARY.encode()).decode() not in message


def test_clean_text_passes(canary):
    assert found("def greet(name):\n    return f'Hello {name}'\n" * 1000) is None


def test_a_forge_write_carrying_a_secret_is_not_sent_and_alerts(canary, standin, settings, django_capture_on_commit_callbacks):  # noqa: F811
    settings.TACX = {**settings.TACX, "ALERT_EMAILS": ["ops@example.com"]}
    standin.add_issue("octo/sample", number=7, title="x", labels=(), labeled_by="alice")
    client = GitHubClient()
    before = len(standin.requests)
    encoded = (canary.encode().hex(), "".join(f"%{b:02x}" for b in canary.encode()), base64.b64encode(b"z" + canary.encode()).decode())
    for body in encoded:
        with pytest.raises(GitHubError) as blocked, django_capture_on_commit_callbacks(execute=True):
            client.issue_comment_create(full_name="octo/sample", number=7, body=f"done!\n\n{body}\n")
        assert blocked.value.permanent and isinstance(blocked.value, PublishBlocked)
        assert "ANTHROPIC_API_KEY" in str(blocked.value) and "/issues/7/comments" in str(blocked.value)
        assert canary not in str(blocked.value)
    assert len(standin.requests) == before  # the stand-in received nothing at all
    assert standin.comments_on("octo/sample", 7) == []
    # The same post again (the coordinator retries a reply or a progress comment): stopped again,
    # told once.
    with pytest.raises(GitHubError), django_capture_on_commit_callbacks(execute=True):
        client.issue_comment_create(full_name="octo/sample", number=7, body=f"done!\n\n{encoded[0]}\n")
    assert len(standin.requests) == before
    alerts = [m for m in mail.outbox if "publish blocked" in m.subject]
    assert len(alerts) == 3 and "ANTHROPIC_API_KEY" in alerts[0].body and canary not in alerts[0].body
    # A clean write goes through.
    assert client.issue_comment_create(full_name="octo/sample", number=7, body="all clean")["body"] == "all clean"


def test_a_5_mb_scan_is_fast(canary):
    data = (b"+    return f'Hello {name}' % (value, 0x1f) # Zm9vYmFy 0123abcdef\n" * 80_000)[: 5 * 1024 * 1024]
    publish_guard.current_needles()
    started = time.perf_counter()
    assert found(data) is None
    leak = data + base64.b64encode(b"k" + canary.encode())
    assert found(leak).encoding == "base64"
    assert time.perf_counter() - started < 5.0  # two 5 MB scans; about 0.2 s each when idle
