"""The Dockerfile, its scripts and compose.yaml, checked as far as this machine can (there is no
container runtime here): the files are parsed and their promises checked against the code, and
the entry point and health check scripts are run for real."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import dj_database_url
import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands

from tests.conftest import ROOT


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the final stage and of every stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, args = line.partition(" ")
            rows.append((instruction.upper(), args.strip()))
    return rows


def final_stage() -> list[tuple[str, str]]:
    rows = dockerfile()
    last_from = max(i for i, (ins, _) in enumerate(rows) if ins == "FROM")
    return rows[last_from:]


def env_of(rows) -> dict[str, str]:
    env: dict[str, str] = {}
    for ins, args in rows:
        if ins == "ENV":
            env.update(dict(re.findall(r"(\w+)=(\S+)", args)))
    return env


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_node_20_comes_from_the_official_image_not_debians_nodejs_18():
    rows = dockerfile()
    assert ("FROM", "node:20-bookworm-slim AS node") in rows
    assert not any(ins == "RUN" and re.search(r"apt-get install[^&]*\bnodejs\b", args) for ins, args in rows)
    assert any(ins == "COPY" and args.startswith("--from=node /usr/local/bin/node") for ins, args in final_stage())
    readme = (ROOT / "README.md").read_text()
    assert "Node 20" in readme


def test_the_app_user_owns_everything_it_writes_and_runs_as_that_user():
    rows = final_stage()
    env = env_of(rows)
    data_paths = [env["TACX_VAR_DIR"], env["TACX_WORKTREE_ROOT"]]
    assert all(p.startswith("/data/") for p in data_paths)
    user_at = next(i for i, (ins, _) in enumerate(rows) if ins == "USER")
    assert rows[user_at][1] == "tacx"
    runs_before_user = [args for ins, args in rows[:user_at] if ins == "RUN"]
    # collectstatic runs at build time, in the same RUN as the recursive chown of /data, and
    # nothing runs as root after it.
    chown_run = next(i for i, args in enumerate(runs_before_user) if "chown -R tacx:tacx /data" in args)
    collect_run = next(i for i, args in enumerate(runs_before_user) if "collectstatic" in args)
    assert collect_run <= chown_run
    last = runs_before_user[chown_run]
    assert last.index("collectstatic") < last.index("chown -R")
    assert all(ins != "RUN" for ins, _ in rows[user_at + 1 :])
    assert ("VOLUME", '["/data"]') in rows


def test_the_image_migrates_on_start_and_has_a_healthcheck():
    rows = final_stage()
    assert ("ENTRYPOINT", '["scripts/docker-entrypoint"]') in rows
    assert env_of(rows)["TACX_MIGRATE"] == "1"
    health = next(args for ins, args in rows if ins == "HEALTHCHECK")
    assert health.endswith('CMD ["scripts/healthcheck"]')
    for script in ("scripts/docker-entrypoint", "scripts/healthcheck"):
        assert os.access(ROOT / script, os.X_OK), f"{script} is not executable"
    cmd = next(args for ins, args in rows if ins == "CMD")
    assert "daphne" in cmd and "$TACX_BIND" in cmd and "$TACX_PORT" in cmd


def test_the_compose_file_runs_the_three_processes_on_postgresql_and_redis():
    data = compose()
    services = data["services"]
    assert set(services) == {"db", "redis", "web", "worker", "coordinator"}
    assert services["db"]["image"].startswith("postgres:") and services["redis"]["image"].startswith("redis:")
    commands = get_commands()
    for name in ("worker", "coordinator"):
        argv = services[name]["command"]
        assert argv[:2] == ["python", "manage.py"] and argv[2] in commands
        assert services[name]["depends_on"] == {"web": {"condition": "service_healthy"}}
        assert services[name]["environment"]["TACX_MIGRATE"] == "0"
        assert services[name]["healthcheck"] == {"disable": True}
    web = services["web"]
    assert web["environment"]["TACX_MIGRATE"] == "1"
    assert web["depends_on"] == {"db": {"condition": "service_healthy"}, "redis": {"condition": "service_healthy"}}
    assert web["ports"] == ["${TACX_PORT:-8000}:8000"]
    env = web["environment"]
    database = dj_database_url.parse(env["DATABASE_URL"].replace("${POSTGRES_PASSWORD:-tacx}", "tacx"))
    assert database["ENGINE"] == "django.db.backends.postgresql" and database["HOST"] == "db" and database["NAME"] == "tacx"
    assert env["REDIS_URL"].startswith("redis://redis:6379")
    assert env["SECRET_KEY"].startswith("${SECRET_KEY:?")  # compose refuses to start without one
    for name in ("ALLOWED_HOSTS", "CSRF_TRUSTED_ORIGINS", "TACX_DASHBOARD_URL"):
        assert name in env
    # Every TAC-X service shares the one /data volume the image prepared for the app user.
    for name in ("web", "worker", "coordinator"):
        assert services[name]["volumes"] == ["tacx-data:/data"]
        assert services[name]["build"] == "."
    assert "tacx-data" in data["volumes"] and "postgres-data" in data["volumes"]


def test_the_entrypoint_migrates_when_asked_and_then_runs_the_command(tmp_path):
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")},
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "TACX_VAR_DIR": str(tmp_path / "var"),
    }
    done = subprocess.run(
        ["scripts/docker-entrypoint", "python", "-c", "print('the command ran')"],
        cwd=ROOT, env={**env, "TACX_MIGRATE": "1"}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "Applying pipeline.0001_initial" in done.stdout and done.stdout.rstrip().endswith("the command ran")
    skipped = subprocess.run(
        ["scripts/docker-entrypoint", "true"], cwd=ROOT, env={**env, "TACX_MIGRATE": "0"}, capture_output=True, text=True, timeout=60
    )
    assert skipped.returncode == 0 and "Applying" not in skipped.stdout


def test_the_healthcheck_fails_when_nothing_answers(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([str(ROOT / "scripts" / "healthcheck")], env={**os.environ, "TACX_PORT": str(port)}, capture_output=True, text=True)
    assert proc.returncode == 1 and str(port) in proc.stderr


@pytest.mark.django_db(transaction=True)
def test_the_healthcheck_passes_against_the_real_server_even_without_a_coordinator(tmp_path):
    from harness import fake_runner
    from tests.test_browser import database_url

    env = {
        **{k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")},
        "DJANGO_SETTINGS_MODULE": "tacx_site.settings",
        "DATABASE_URL": database_url(),
        "TACX_VAR_DIR": str(tmp_path / "var"),
    }
    with fake_runner.daphne_serving(env=env, log_path=tmp_path / "daphne.log") as url:
        port = url.rsplit(":", 1)[1]
        proc = subprocess.run([str(ROOT / "scripts" / "healthcheck")], env={**os.environ, "TACX_PORT": port}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def env_example() -> dict[str, bool]:
    """Names in .env.example -> set (uncommented) or only shown (commented out)."""
    names = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"^(#\s*)?([A-Z][A-Z0-9_]*)=", line)
        if match:
            names[match.group(2)] = not match.group(1)
    return names


def names_tacx_reads() -> set[str]:
    """Environment variables TAC-X itself reads: the settings, what the agent CLIs are handed
    (their providers' passthrough lists) and what compose.yaml interpolates."""
    settings_text = (ROOT / "tacx_site" / "settings.py").read_text()
    names = set(re.findall(r'(?:os\.environ\.get|env_bool|env_int|env_float)\(\s*"([A-Z][A-Z0-9_]+)"', settings_text))
    for path in (ROOT / "pipeline" / "providers").glob("*.py"):
        for group in re.findall(r"passthrough_env = \(([^)]*)\)", path.read_text()):
            names |= set(re.findall(r'"([A-Z][A-Z0-9_]+)"', group))
    names |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (ROOT / "compose.yaml").read_text()))
    names |= {"TACX_MODEL_API_KEY"}  # codex's env_key (pipeline.providers.codex.MODEL_API_KEY_ENV)
    return names


def test_static_files_are_collected_into_the_image_not_onto_the_data_volume():
    rows = final_stage()
    env = env_of(rows)
    static_root = env["TACX_STATIC_ROOT"]
    assert static_root.startswith("/app/") and not static_root.startswith("/data")
    collect = next(args for ins, args in rows if ins == "RUN" and "collectstatic" in args)
    assert collect.startswith("python manage.py collectstatic")
    # The entry point collects nothing at start (a volume would keep the old files).
    assert "collectstatic" not in (ROOT / "scripts" / "docker-entrypoint").read_text()
    # No service moves it back onto the volume.
    for name in ("web", "worker", "coordinator"):
        assert "TACX_STATIC_ROOT" not in compose()["services"][name]["environment"]
    # The settings honour it (run in a fresh interpreter: settings are read once per process).
    probe = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; print(settings.STATIC_ROOT)"],
        cwd=ROOT, env={**os.environ, "DJANGO_SETTINGS_MODULE": "tacx_site.settings", "TACX_STATIC_ROOT": "/tmp/tacx-static-probe"},
        capture_output=True, text=True, timeout=60,
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "/tmp/tacx-static-probe"
    assert str(settings.STATIC_ROOT).endswith("staticfiles")  # a checkout (make demo): var/ as before


def test_every_service_reads_the_env_file_and_gets_the_app_key_as_a_secret():
    data = compose()
    for name in ("web", "worker", "coordinator"):
        service = data["services"][name]
        assert service["env_file"] == [{"path": ".env", "required": False}]
        assert service["secrets"] == ["github_app_private_key"]
        assert service["environment"]["GITHUB_APP_PRIVATE_KEY_FILE"] == "/run/secrets/github_app_private_key"
    assert data["secrets"]["github_app_private_key"]["file"] == "${GITHUB_APP_PRIVATE_KEY_PATH:-./secrets/github-app.pem}"
    # Neither the secrets nor .env end up in the image or in git.
    dockerignore = (ROOT / ".dockerignore").read_text().splitlines()
    assert ".env" in dockerignore and "secrets/" in dockerignore
    gitignore = (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in gitignore and "/secrets/" in gitignore


def test_env_example_lists_only_variables_tacx_reads_and_every_one_the_readme_documents():
    listed = env_example()
    known = names_tacx_reads()
    assert not set(listed) - known, f".env.example lists variables nothing reads: {sorted(set(listed) - known)}"
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"\b((?:TACX|GITHUB)_[A-Z0-9_]*[A-Z0-9]|[A-Z]+_API_KEY|SECRET_KEY|ALLOWED_HOSTS|CSRF_TRUSTED_ORIGINS)\b", readme)) & known
    # What compose.yaml or the image decide, not the user.
    decided = {"DATABASE_URL", "REDIS_URL", "TACX_VAR_DIR", "TACX_WORKTREE_ROOT", "TACX_STATIC_ROOT", "TACX_MIGRATE", "TACX_BIND", "GITHUB_APP_PRIVATE_KEY_FILE"}
    missing = documented - decided - set(listed)
    assert not missing, f"the README documents these, .env.example does not list them: {sorted(missing)}"
    # The model keys the README names, OPENCODE_API_KEY included, and the settings a user must give.
    assert {"ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "OPENCODE_API_KEY", "TACX_GITHUB_LOGIN", "GITHUB_APP_ID", "TACX_Q_WORKERS"} <= set(listed)
    assert listed["SECRET_KEY"] and listed["ALLOWED_HOSTS"]
