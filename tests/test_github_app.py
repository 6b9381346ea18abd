"""GitHub App identity: JWT (RS256) → installation token per repository installation, cached and
refreshed before expiry; every GitHub call works with it; the token never appears in a remote
URL, an event, a log line or a page. The stand-in verifies the JWT with the App's public key."""

from __future__ import annotations

import logging
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from github_standin import GitHubStandIn, command_workflow

from pipeline import github_auth
from pipeline.github import GitHubClient, GitHubError
from pipeline.github_auth import REFRESH_MARGIN, AppIdentity

APP_ID = 4242


def keypair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return private, public


PRIVATE_KEY, PUBLIC_KEY = keypair()


class Clock:
    """One pinned clock for TAC-X and the stand-in: time passes only when a test says so."""

    def __init__(self, now: float = 1_900_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def app_standin(clock):
    server = GitHubStandIn(app_id=APP_ID, app_public_key=PUBLIC_KEY, clock=clock).start()
    server.add_repo("octo/sample", permissions={"alice": "write"})
    server.add_repo("other/thing")
    server.add_installation(77, account="octo", repos=("octo/sample",))
    server.add_installation(88, account="other", repos=("other/thing",))
    yield server
    server.stop()


def app_client(server: GitHubStandIn, clock: Clock, key: str = PRIVATE_KEY) -> GitHubClient:
    return GitHubClient(base_url=server.url, identity=AppIdentity(app_id=str(APP_ID), private_key=key, base_url=server.url, clock=clock))


def tokens_used(server: GitHubStandIn, path_regex: str) -> list[str]:
    return [r["authorization"] for r in server.requests_to("GET", path_regex)]


def test_calls_use_an_installation_token_obtained_with_a_verified_jwt(app_standin, clock):
    client = app_client(app_standin, clock)
    assert client.collaborator_permission(full_name="octo/sample", login="alice") == "write"
    assert client.collaborator_permission(full_name="octo/sample", login="bob") == "read"

    (lookup,) = app_standin.requests_to("GET", r"/repos/octo/sample/installation$")
    (exchange,) = app_standin.requests_to("POST", r"^/app/installations/77/access_tokens$")
    assert lookup["status"] == 200 and exchange["status"] == 201
    calls = app_standin.requests_to("GET", r"/collaborators/")
    assert [c["identity"] for c in calls] == ["installation:77", "installation:77"]  # one token, cached
    assert calls[0]["authorization"] == calls[1]["authorization"] and calls[0]["authorization"].startswith("Bearer ghs_")


def test_each_repository_gets_the_token_of_its_own_installation(app_standin, clock):
    client = app_client(app_standin, clock)
    client.collaborator_permission(full_name="octo/sample", login="alice")
    client.collaborator_permission(full_name="other/thing", login="alice")
    assert [c["identity"] for c in app_standin.requests_to("GET", r"/collaborators/")] == ["installation:77", "installation:88"]


def test_a_jwt_signed_with_another_key_is_refused(app_standin, clock):
    other_private, _ = keypair()
    client = app_client(app_standin, clock, key=other_private)
    with pytest.raises(GitHubError) as exc:
        client.collaborator_permission(full_name="octo/sample", login="alice")
    assert exc.value.permanent and "answered 401: A JSON web token could not be decoded" in str(exc.value)
    assert not app_standin.installation_tokens


def test_the_jwt_is_short_lived_and_names_the_app(app_standin, clock):
    import jwt

    identity = AppIdentity(app_id=str(APP_ID), private_key=PRIVATE_KEY, base_url=app_standin.url, clock=clock)
    claims = jwt.decode(identity.app_jwt(), PUBLIC_KEY, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False})
    assert claims["iss"] == str(APP_ID)
    assert claims["iat"] <= clock.now and 0 < claims["exp"] - clock.now <= 600


def test_the_token_is_refreshed_before_it_expires_and_an_expired_one_is_never_sent(app_standin, clock):
    client = app_client(app_standin, clock)
    client.collaborator_permission(full_name="octo/sample", login="alice")
    first = tokens_used(app_standin, r"/collaborators/")[-1]
    expiry = app_standin.installation_tokens[first.split()[1]]["expires_at"]

    clock.now = expiry - REFRESH_MARGIN - 1  # still fresh enough
    client.collaborator_permission(full_name="octo/sample", login="alice")
    assert tokens_used(app_standin, r"/collaborators/")[-1] == first

    clock.now = expiry - REFRESH_MARGIN + 1  # inside the margin: replaced before use
    client.collaborator_permission(full_name="octo/sample", login="alice")
    second = tokens_used(app_standin, r"/collaborators/")[-1]
    assert second != first

    clock.now = app_standin.installation_tokens[second.split()[1]]["expires_at"] + 10  # long past expiry
    client.collaborator_permission(full_name="octo/sample", login="alice")
    third = tokens_used(app_standin, r"/collaborators/")[-1]
    assert third not in (first, second)
    # Every call was accepted: none carried an expired token.
    assert all(r["status"] == 200 for r in app_standin.requests_to("GET", r"/collaborators/"))
    assert len(app_standin.requests_to("POST", r"/access_tokens$")) == 3


def test_a_token_github_revoked_early_is_replaced_once(app_standin, clock):
    client = app_client(app_standin, clock)
    client.collaborator_permission(full_name="octo/sample", login="alice")
    app_standin.expire_installation_tokens()
    assert client.collaborator_permission(full_name="octo/sample", login="alice") == "write"
    statuses = [r["status"] for r in app_standin.requests_to("GET", r"/collaborators/")]
    assert statuses == [200, 401, 200]


def test_a_repository_without_the_app_installed_is_a_clear_permanent_error(app_standin, clock):
    app_standin.add_repo("stray/repo")
    with pytest.raises(GitHubError) as exc:
        app_client(app_standin, clock).collaborator_permission(full_name="stray/repo", login="alice")
    assert exc.value.permanent and "/repos/stray/repo/installation answered 404" in str(exc.value)


def test_the_identity_comes_from_the_settings_with_the_key_from_a_file(app_standin, settings, tmp_path):
    key_file = tmp_path / "app.pem"
    key_file.write_text(PRIVATE_KEY)
    settings.GITHUB_API_URL = app_standin.url
    settings.GITHUB_APP_ID = str(APP_ID)
    settings.GITHUB_APP_PRIVATE_KEY = ""
    settings.GITHUB_APP_PRIVATE_KEY_FILE = str(key_file)
    settings.GITHUB_TOKEN = ""
    github_auth.forget_shared_identities()
    app_standin.clock = __import__("time").time
    try:
        client = GitHubClient()
        assert client.is_app
        assert client.collaborator_permission(full_name="octo/sample", login="alice") == "write"
        # A second client of the process shares the cached token.
        GitHubClient().collaborator_permission(full_name="octo/sample", login="alice")
        assert len(app_standin.requests_to("POST", r"/access_tokens$")) == 1
    finally:
        github_auth.forget_shared_identities()


@pytest.mark.django_db(transaction=True)
def test_a_whole_task_runs_under_the_app_identity_and_the_token_is_never_shown(app_standin, settings, tmp_path, client, django_user_model, caplog):
    """Polling, permission check, progress comment, PR, pushes: all with the installation token;
    afterwards the token is nowhere in the database, the remote URLs, the logs or the task page."""
    from conftest import make_origin_and_clone
    from test_coordinator_e2e import labelled_issue_run

    from pipeline.models import AgentEvent, StageResult, Task

    settings.GITHUB_API_URL = app_standin.url
    settings.GITHUB_APP_ID = str(APP_ID)
    settings.GITHUB_APP_PRIVATE_KEY = PRIVATE_KEY.replace("\n", "\\n")  # one-line env form
    settings.GITHUB_APP_PRIVATE_KEY_FILE = ""
    settings.GITHUB_TOKEN = ""
    settings.GITHUB_WEBHOOK_SECRET = "x" * 20
    settings.TACX = {**settings.TACX, "POLL_INTERVAL": 0.0, "DASHBOARD_URL": "https://tacx.example"}
    app_standin.clock = __import__("time").time
    github_auth.forget_shared_identities()
    caplog.set_level(logging.DEBUG)
    try:
        files = {"README.md": "# sample\n", ".tac/workflow.yaml": command_workflow()}
        origin, _ = make_origin_and_clone(tmp_path, "sample", files)
        task = labelled_issue_run(app_standin, str(origin), 5)
        assert task.status == Task.Status.SUCCEEDED, task.status_reason
        assert app_standin.pulls_of("octo/sample")

        api_calls = [r for r in app_standin.requests if not r["path"].startswith("/app/") and not r["path"].endswith("/installation")]
        assert api_calls and all(r["identity"] == "installation:77" for r in api_calls)
        issued = list(app_standin.installation_tokens)
        assert issued
        user = django_user_model.objects.create_user("viewer", "v@example.com", "pw-pw-pw-pw")
        client.force_login(user)
        page = client.get(f"/tasks/{task.pk}/").content.decode()
        remotes = subprocess.run(["git", "config", "--get-regexp", "remote"], cwd=settings.VAR_DIR / "repos" / "octo-sample.git", capture_output=True, text=True).stdout
        stored = " ".join(str(v) for v in AgentEvent.objects.values_list("data", flat=True)) + " ".join(
            f"{r.prompt} {r.output_text} {r.error}" for r in StageResult.objects.all()
        )
        for token in issued:
            assert token not in page and token not in remotes and token not in stored and token not in caplog.text
        assert "ghs_" not in remotes
    finally:
        github_auth.forget_shared_identities()


def test_a_reinstalled_app_is_found_under_its_new_installation(app_standin, clock):
    client = app_client(app_standin, clock)
    client.collaborator_permission(full_name="octo/sample", login="alice")
    with app_standin.lock:
        del app_standin.installations[77]
    app_standin.add_installation(99, account="octo", repos=("octo/sample",))
    clock.now += 3600  # the old token expired: its installation (77) is gone when it is renewed
    assert client.collaborator_permission(full_name="octo/sample", login="alice") == "write"
    assert app_standin.requests_to("GET", r"/collaborators/")[-1]["identity"] == "installation:99"
    assert [r["status"] for r in app_standin.requests_to("POST", r"/access_tokens$")] == [201, 404, 201]
