"""The fixed cast every test file shares (healthchecks' `BaseTestCase` style): one user, one
local repository with a bare origin on disk, a private worktree root, a clean agent environment.

Real parts only: real git, the real database (SQLite, or PostgreSQL with DATABASE_URL), the real
agent CLIs from node_modules driven by the scripted model server on loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from harness.cli_runs import DUMMY_API_KEY
from harness.modelserver import ScriptedModelServer

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_REPO = ROOT / "demo" / "sample-repo"
SCRIPTS = ROOT / "tests" / "scripts"  # model-server scripts
TRANSCRIPTS = ROOT / "tests" / "fixtures" / "transcripts"  # CLI output the parser tests read


def transcript_lines(name: str) -> list[str]:
    """The lines of one transcript fixture."""
    return (TRANSCRIPTS / name).read_text().splitlines()


def transcript_objects(name: str) -> list[dict]:
    """The JSON objects of one transcript fixture, one a line."""
    return [json.loads(line) for line in transcript_lines(name)]


def needs_cli(binary: Path) -> list[pytest.MarkDecorator]:
    """The marks of a module that drives one real agent CLI from node_modules."""
    return [pytest.mark.cli, pytest.mark.skipif(not binary.exists(), reason=f"{binary.name} is not installed in node_modules")]


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "t@example.com"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def make_origin_and_clone(base: Path, name: str = "sample", files: dict[str, str] | None = None) -> tuple[Path, Path]:
    """A bare repository (the origin) and a clone of it with one commit on `main`."""
    origin = base / f"{name}-origin.git"
    clone = base / name
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(origin)], check=True)
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(clone)], check=True)
    if files is None:
        files = {str(p.relative_to(SAMPLE_REPO)): p.read_text() for p in SAMPLE_REPO.rglob("*") if p.is_file()}
    for rel, text in files.items():
        target = clone / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git(clone, "add", "-A")
    git(clone, "commit", "--quiet", "-m", "initial commit")
    git(clone, "remote", "add", "origin", str(origin))
    git(clone, "push", "--quiet", "origin", "main")
    return origin, clone


def wait_for(condition, what: str, timeout: float = 60.0, interval: float = 0.05):
    """Poll ``condition`` until it returns something true, and return that; fail naming ``what``
    after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)
    return value


def commit_workflow(clone: Path, text: str) -> None:
    """Write ``.tac/workflow.yaml`` into ``clone`` and commit it (not pushed)."""
    (clone / ".tac").mkdir(exist_ok=True)
    (clone / ".tac" / "workflow.yaml").write_text(text)
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "workflow")


def point_claude_at(monkeypatch, server: ScriptedModelServer, *, tacx_key: bool = False) -> None:
    """Send the claude CLI to the scripted ``server`` with the dummy key; with ``tacx_key`` also
    set ``TACX_MODEL_API_KEY`` (the key TAC-X hands every provider)."""
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", DUMMY_API_KEY)
    if tacx_key:
        monkeypatch.setenv("TACX_MODEL_API_KEY", DUMMY_API_KEY)


@pytest.fixture
def start_model_server(request):
    """Starts a scripted model server on loopback for a script; it stops when the test ends."""

    def start(script) -> ScriptedModelServer:
        server = ScriptedModelServer(script).start()
        request.addfinalizer(server.stop)
        return server

    return start


@pytest.fixture(autouse=True)
def _isolated(settings, tmp_path, monkeypatch):
    """Every test gets its own worktree root, var dir and agent home; no forge token leaks in."""
    # Agents in tests are often this Python (the `command` provider): the sandbox lets them read
    # its installation and the scripted agents, nothing else of TAC-X's tree.
    allow = [sys.prefix, sys.base_prefix, str(ROOT / "tests" / "agents")]
    settings.TACX = {
        **settings.TACX,
        "WORKTREE_ROOT": tmp_path / "trees",
        "KILL_GRACE_SECONDS": 1.0,
        "HEARTBEAT_SECONDS": 1.0,
        # Every coordinator step on every cycle (tests call run_cycle and expect each step).
        "HOUSEKEEPING_SECONDS": 0.0,
        "SANDBOX_ALLOW_READ": allow,
    }
    settings.VAR_DIR = tmp_path / "var"
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CODEX_HOME", str(home / ".codex"))
    for name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    from pipeline.lib import redaction

    redaction.refresh_literal_secrets()
    yield
    redaction.refresh_literal_secrets()


@pytest.fixture
def origin_and_clone(tmp_path) -> tuple[Path, Path]:
    return make_origin_and_clone(tmp_path)


@pytest.fixture
def clone(origin_and_clone) -> Path:
    """The working clone of `origin_and_clone` (the origin is its bare repository)."""
    return origin_and_clone[1]


@pytest.fixture
def local_repository(db, origin_and_clone):
    from pipeline.models import Repository

    origin, clone = origin_and_clone
    return Repository.objects.create(kind=Repository.Kind.LOCAL, full_name="sample", local_path=str(clone), default_branch="main")


TASK_PERMISSIONS = ("view_task", "add_task", "change_task", "retry_task", "cancel_task", "approve_task")
# A repository's memory: see it (view), edit, accept and reject (change), add, delete.
MEMORY_PERMISSIONS = ("view_memoryentry", "add_memoryentry", "change_memoryentry", "delete_memoryentry")


def grant(user, *codenames: str):
    """Give `user` these permissions of the pipeline app (see "Roles" in the README) and return it fresh."""
    from django.contrib.auth.models import Permission

    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="pipeline", codename__in=codenames))
    return type(user).objects.get(pk=user.pk)  # a fresh object: has_perm caches


@pytest.fixture
def alice(db, django_user_model):
    """An operator: may see, create, retry, cancel and approve tasks, and keep the repositories'
    memory (not staff)."""
    user = django_user_model.objects.create_user("alice", "alice@example.com", "correct-horse-battery")
    return grant(user, *TASK_PERMISSIONS, *MEMORY_PERMISSIONS)


@pytest.fixture
def api(alice):
    """A REST API client signed in as alice."""
    client = APIClient()
    client.force_authenticate(alice)
    return client


def processes_matching(tag: str) -> list[int]:
    """Host pids whose command line contains `tag` (agents in the sandbox's PID namespace are
    visible from the host's /proc, with host pids)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            state = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if tag.encode() in cmdline and state != b"Z":
            found.append(int(entry))
    return found


# --- the PostgreSQL pass ------------------------------------------------------------------------

# Fixtures that reach the project's database (directly, or through a server process given its URL).
DATABASE_FIXTURES = frozenset({"db", "transactional_db", "live_server", "django_db_reset_sequences", "django_db_serialized_rollback"})


def uses_database(item) -> bool:
    """Whether a test touches the database it is run against (a `django_db` mark, or a fixture
    of DATABASE_FIXTURES anywhere in its fixture closure)."""
    return item.get_closest_marker("django_db") is not None or bool(DATABASE_FIXTURES & set(getattr(item, "fixturenames", ())))


def pytest_collection_modifyitems(config, items):
    """`make test-postgres` (TACX_TESTS_DATABASE_ONLY=1) runs only the tests that touch the
    database: the others (parsers, the gate, the sandbox, the CLIs' formats, tests that start a
    stack on a database of their own) give the same result whatever DATABASE_URL says, and run
    in the SQLite pass."""
    if os.environ.get("TACX_TESTS_DATABASE_ONLY") != "1":
        return
    keep = [item for item in items if uses_database(item)]
    dropped = [item for item in items if not uses_database(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
