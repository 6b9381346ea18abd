"""TAC-X settings.

Everything comes from environment variables with working defaults: out of the box TAC-X runs on
SQLite with worktrees under ``trees/`` beside the project. ``DATABASE_URL`` switches to
PostgreSQL, ``REDIS_URL`` turns on channels_redis for live updates across processes.
"""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


# The key signs sessions and django-q2 payloads. The default is only good for a laptop.
SECRET_KEY = os.environ.get("SECRET_KEY", "tacx-insecure-development-key-change-me")
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1],testserver").split(",") if h.strip()]
CSRF_TRUSTED_ORIGINS = [o.strip() for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()]

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "django_q",
    "channels",
    "pipeline",
    "coordinator",
    "dashboard",
    "evaluation",
    "harness",
]

MIDDLEWARE = [
    "tacx_site.csp.ContentSecurityPolicyMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "tacx_site.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.context_processors.sandbox_state",
            ],
        },
    },
]

WSGI_APPLICATION = "tacx_site.wsgi.application"
ASGI_APPLICATION = "tacx_site.asgi.application"

VAR_DIR = Path(os.environ.get("TACX_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)

# Long-lived processes (the q2 cluster, the coordinator) keep their connection for
# DB_CONN_MAX_AGE seconds instead of opening one per poll (9.6 new PostgreSQL connections per
# second per idle machine with 0); a broken one is noticed and replaced before use. The web
# process (asgi.py) defaults to 0. A running stage closes its connection while its agent is quiet
# (TACX_DB_RELEASE_SECONDS). Large installations: see "Many machines" in the README (PgBouncer).
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=env_int("DB_CONN_MAX_AGE", 600),
        conn_health_checks=True,
    )
}
# Behind PgBouncer in transaction pooling mode, server-side cursors (.iterator()) must be off.
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = env_bool("DB_DISABLE_SERVER_SIDE_CURSORS", False)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Several processes (web, q2 cluster, coordinator) share the file: wait for locks instead of
    # failing at once, and take the write lock at BEGIN so a read-then-write cannot deadlock.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # A file (not :memory:) so tests can share it with the processes they start; one per test
    # run so concurrent runs never meet.
    DATABASES["default"]["TEST"] = {"NAME": os.environ.get("TACX_TEST_SQLITE", str(VAR_DIR / f"test-db-{os.getpid()}.sqlite3"))}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
# The image collects into TACX_STATIC_ROOT at build time (outside the /data volume, so a new
# image serves its own CSS and JS); a checkout collects under var/ as before.
STATIC_ROOT = Path(os.environ.get("TACX_STATIC_ROOT") or VAR_DIR / "staticfiles")
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
# Serve static/ straight from the source tree too, so the demo works without collectstatic.
WHITENOISE_USE_FINDERS = True

LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# --- REST API ---------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "dashboard.api.permissions.HasRequiredPermission",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "dashboard.api.parsers.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "dashboard.api.errors.exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "TAC-X API",
    "DESCRIPTION": "Tasks, stages, attempts and agent events of the TAC-X pipeline.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema needs a login like the docs page (it lists every operation).
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "ENUM_NAME_OVERRIDES": {
        "TaskStatusEnum": "pipeline.models.Task.Status",
        "StageStatusEnum": "pipeline.models.Stage.Status",
        "EvalRunStatusEnum": "evaluation.models.EvalRun.Status",
        "EvalResultStatusEnum": "evaluation.models.EvalResult.Status",
        "EvalResultOutcomeEnum": "evaluation.models.EvalResult.Outcome",
        "StageResultOutcomeEnum": "pipeline.models.StageResult.Outcome",
    },
}

# --- Live updates -----------------------------------------------------------------------------
REDIS_URL = os.environ.get("REDIS_URL", "")
if REDIS_URL:
    CHANNEL_LAYERS = {
        "default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}
    }
else:
    # No cross-process layer: consumers poll the events table (see dashboard.consumers).
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# --- TAC-X ------------------------------------------------------------------------------------
def _on_exceed(value: str, name: str) -> str:
    value = value.strip().lower() or "fail"
    if value not in ("fail", "pause"):
        raise ImproperlyConfigured(
            f"{name} must be 'fail' (end the task when the budget is reached) or 'pause' (stop it and wait for a person), got {value!r}"
        )
    return value


def _sandbox_mode(value: str) -> str:
    value = value.strip().lower()
    if value not in ("required", "off"):
        raise ImproperlyConfigured(f"TACX_SANDBOX must be 'required' or 'off', got {value!r}")
    return value


TACX = {
    "WORKTREE_ROOT": Path(os.environ.get("TACX_WORKTREE_ROOT", BASE_DIR / "trees")),
    # Where agent CLIs are looked up before PATH: the npm-installed ones beside the project.
    "AGENT_BIN_DIRS": [p for p in os.environ.get("TACX_AGENT_BIN_DIRS", str(BASE_DIR / "node_modules" / ".bin")).split(os.pathsep) if p],
    "LEASE_SECONDS": env_int("TACX_LEASE_SECONDS", 60),
    # A queued stage whose q2 job is missing (or was taken this long ago by a worker that never
    # claimed the stage) is enqueued again by the coordinator after this many seconds.
    "LOST_JOB_SECONDS": env_float("TACX_LOST_JOB_SECONDS", 60.0),
    # Live websockets one user may hold open in one daphne process (more are closed with 4429).
    "WS_MAX_PER_USER": env_int("TACX_WS_MAX_PER_USER", 20),
    "HEARTBEAT_SECONDS": env_float("TACX_HEARTBEAT_SECONDS", 5.0),
    "EVENT_BATCH_SECONDS": env_float("TACX_EVENT_BATCH_SECONDS", 0.05),
    # A running stage stores its events at most every EVENT_BATCH_SECONDS (a line after a quiet
    # spell at once), every EVENT_BATCH_BUSY_SECONDS while it prints more than 20 lines/s, and
    # at the latest when EVENT_BATCH_MAX are waiting.
    "EVENT_BATCH_BUSY_SECONDS": env_float("TACX_EVENT_BATCH_BUSY_SECONDS", 0.25),
    "EVENT_BATCH_MAX": env_int("TACX_EVENT_BATCH_MAX", 500),
    # A running stage's writes are retried through a database outage this long (pipeline.lib.dbretry).
    "DB_OUTAGE_SECONDS": env_float("TACX_DB_OUTAGE_SECONDS", 60.0),
    # A running stage closes its database connection after this long without a write (0: after
    # every write), so agents waiting on a model hold no PostgreSQL connection.
    "DB_RELEASE_SECONDS": env_float("TACX_DB_RELEASE_SECONDS", 2.0),
    # Each django-q2 worker renews its stage slot this often; admission counts the live slots.
    "SLOT_HEARTBEAT_SECONDS": env_float("TACX_SLOT_HEARTBEAT_SECONDS", 15.0),
    # Attempts this machine's stage host runs at once, each a thread around its agent
    # (pipeline.stage_host; README "Process model"). 0 is the previous model: each django-q2
    # worker process runs one attempt, so TACX_Q_WORKERS is the number of slots.
    "STAGE_HOST_ATTEMPTS": env_int("TACX_STAGE_HOST_ATTEMPTS", 16),
    # Admit at most as many running tasks as live stage slots (0: only MAX_CONCURRENT_TASKS).
    "ADMIT_BY_SLOTS": env_bool("TACX_ADMIT_BY_SLOTS", True),
    "MAX_ATTEMPTS": env_int("TACX_MAX_ATTEMPTS", 3),
    "MAX_CONCURRENT_TASKS": env_int("TACX_MAX_CONCURRENT_TASKS", 4),
    "POLL_INTERVAL": env_float("TACX_POLL_INTERVAL", 15.0),
    # How often the poller looks at each task's PR and issue (comments, reviews, checks): a
    # safety net behind the webhook, about 7 requests per task with a recent PR.
    "CONVERSATION_POLL_INTERVAL": env_float("TACX_CONVERSATION_POLL_INTERVAL", 60.0),
    # ... and at each open PR's state (merged? closed?) for this many days after it opened:
    # the fallback behind the `pull_request` webhook (one request per PR and interval).
    "PR_OUTCOME_POLL_DAYS": env_float("TACX_PR_OUTCOME_POLL_DAYS", 30.0),
    "COORDINATOR_TICK_SECONDS": env_float("TACX_COORDINATOR_TICK_SECONDS", 0.2),
    # Coordinator steps other than deliveries and dispatch look at most this often while idle.
    "HOUSEKEEPING_SECONDS": env_float("TACX_HOUSEKEEPING_SECONDS", 1.0),
    "WORKTREE_RETENTION_HOURS": env_float("TACX_WORKTREE_RETENTION_HOURS", 24.0),
    # A machine none of whose processes has been heard from for this long never comes back: its
    # worktrees of tasks finished that long ago are recorded as removed (coordinator.reaping).
    "LOST_MACHINE_HOURS": env_float("TACX_LOST_MACHINE_HOURS", 72.0),
    # Agent events (transcripts) of tasks finished this many days ago are deleted; status
    # events stay (0: keep everything, the default).
    "EVENT_RETENTION_DAYS": env_float("TACX_EVENT_RETENTION_DAYS", 0.0),
    # Claude Code retries a failing API for minutes; this many retries in a row fail the stage.
    "AUTH_RETRY_LIMIT": env_int("TACX_AUTH_RETRY_LIMIT", 3),
    # Gemini CLI: attempts per model call on 429/5xx (its default, 10, takes about 210 s to fail).
    "GEMINI_MAX_ATTEMPTS": env_int("TACX_GEMINI_MAX_ATTEMPTS", 3),
    # Qwen Code: the OpenAI SDK's retries inside each of its own (fixed) 7 attempts.
    "QWEN_MAX_RETRIES": env_int("TACX_QWEN_MAX_RETRIES", 1),
    "KILL_GRACE_SECONDS": env_float("TACX_KILL_GRACE_SECONDS", 3.0),
    "DRAFT_PRS": env_bool("TACX_DRAFT_PRS", True),
    "DASHBOARD_URL": os.environ.get("TACX_DASHBOARD_URL", "http://127.0.0.1:8000"),
    # A commit status "TAC-X / human approval" stays pending on the PR head until a human other
    # than the requester approves it (coordinator/checks.py); branch protection can require it.
    "REQUIRE_HUMAN_APPROVAL": env_bool("TACX_REQUIRE_HUMAN_APPROVAL", False),
    "ALLOWED_BOTS": [b for b in os.environ.get("TACX_ALLOWED_BOTS", "").split(",") if b],
    # TAC-X's own GitHub login (its token's user or App bot): its comments and reviews never
    # start a round. Its comments also carry a `<!-- tacx:` marker, which is checked as well.
    "GITHUB_LOGIN": os.environ.get("TACX_GITHUB_LOGIN", ""),
    "DAILY_BUDGET_USD": os.environ.get("TACX_DAILY_BUDGET_USD", ""),
    "DAILY_BUDGET_TOKENS": os.environ.get("TACX_DAILY_BUDGET_TOKENS", ""),
    # What the global daily budget does when a running agent reaches it: fail its task, or pause it.
    "DAILY_BUDGET_ON_EXCEED": _on_exceed(os.environ.get("TACX_DAILY_BUDGET_ON_EXCEED", "fail"), "TACX_DAILY_BUDGET_ON_EXCEED"),
    # A task paused by a budget (`on_exceed: pause`) that nobody answers ends this long after it
    # paused (status budget_exceeded; 72 h by default).
    "BUDGET_PAUSE_SECONDS": env_float("TACX_BUDGET_PAUSE_SECONDS", 72 * 3600.0),
    # /metrics: served for `Authorization: Bearer <token>` or a staff session; to direct (unproxied)
    # loopback clients without either only when METRICS_LOOPBACK is set explicitly.
    "METRICS_TOKEN": os.environ.get("TACX_METRICS_TOKEN", ""),
    "METRICS_LOOPBACK": env_bool("TACX_METRICS_LOOPBACK", False),
    # Alerts (pipeline.alerts): a generic JSON webhook and/or emails through Django's mail settings.
    "ALERT_WEBHOOK_URL": os.environ.get("TACX_ALERT_WEBHOOK_URL", ""),
    "ALERT_EMAILS": [e.strip() for e in os.environ.get("TACX_ALERT_EMAILS", "").split(",") if e.strip()],
    "ALERT_TIMEOUT_SECONDS": env_float("TACX_ALERT_TIMEOUT_SECONDS", 5.0),
    # A stage without its own stall_timeout is killed as stalled after this long without output (0: never).
    "STALL_SECONDS": env_int("TACX_STALL_SECONDS", 900),
    "HEARTBEAT_STALE_SECONDS": env_float("TACX_HEARTBEAT_STALE_SECONDS", 120.0),
    # Agent containment (pipeline/sandbox): "required" (default) or "off" (explicit opt-out).
    "SANDBOX": _sandbox_mode(os.environ.get("TACX_SANDBOX", "required")),
    "SANDBOX_ALLOW_READ": [p for p in os.environ.get("TACX_SANDBOX_ALLOW_READ", "").split(os.pathsep) if p],
    "SANDBOX_TMP": os.environ.get("TACX_SANDBOX_TMP", ""),
    # Paths the repository's own commands (hooks, test_command) may write, never an agent: e.g.
    # a package cache shared by setups.
    "SANDBOX_HOOK_WRITE": [p for p in os.environ.get("TACX_SANDBOX_HOOK_WRITE", "").split(os.pathsep) if p],
    # The setup cache (pipeline/setup_cache.py): VAR_DIR/setupcache/<repository id>/<key>/, written by
    # `setup` hooks only. Per repository: keys unused for MAX_AGE_DAYS go, then the least recently
    # used until the rest fits in MAX_BYTES (0: no setup cache at all).
    "SETUP_CACHE_MAX_BYTES": env_int("TACX_SETUP_CACHE_MAX_BYTES", 4 * 1024**3),
    "SETUP_CACHE_MAX_AGE_DAYS": env_float("TACX_SETUP_CACHE_MAX_AGE_DAYS", 14.0),
    "SANDBOX_NODE": os.environ.get("TACX_SANDBOX_NODE", ""),
    "SANDBOX_BWRAP": os.environ.get("TACX_SANDBOX_BWRAP", ""),
    "SANDBOX_SOCAT": os.environ.get("TACX_SANDBOX_SOCAT", ""),
    "SANDBOX_RIPGREP": os.environ.get("TACX_SANDBOX_RIPGREP", ""),
    # The hand-back gate (pipeline/worktree_reads.py): what TAC-X reads back from a worktree. A
    # file over HANDBACK_FILE_MAX_BYTES (plan.md, review.md) is refused unread; an attempt reads at
    # most HANDBACK_TOTAL_MAX_BYTES in all; a read taking longer than HANDBACK_READ_SECONDS is
    # refused; a worktree with more entries than HANDBACK_SCAN_MAX_ENTRIES is not vouched for.
    "HANDBACK_FILE_MAX_BYTES": env_int("TACX_HANDBACK_FILE_MAX_BYTES", 256 * 1024),
    "HANDBACK_TOTAL_MAX_BYTES": env_int("TACX_HANDBACK_TOTAL_MAX_BYTES", 4 * 1024 * 1024),
    "HANDBACK_READ_SECONDS": env_float("TACX_HANDBACK_READ_SECONDS", 10.0),
    "HANDBACK_SCAN_MAX_ENTRIES": env_int("TACX_HANDBACK_SCAN_MAX_ENTRIES", 500_000),
    # A repository's memory (pipeline/attempt/memory.py, pipeline/services/memory.py): the memory
    # file an agent leaves is read up to MEMORY_FILE_MAX_BYTES (larger: refused unread); a task
    # proposes at most MEMORY_ENTRIES_PER_TASK entries of at most MEMORY_ENTRY_MAX_CHARS characters;
    # a prompt carries at most MEMORY_PROMPT_MAX_CHARS characters of accepted entries.
    "MEMORY_FILE_MAX_BYTES": env_int("TACX_MEMORY_FILE_MAX_BYTES", 16 * 1024),
    "MEMORY_ENTRIES_PER_TASK": env_int("TACX_MEMORY_ENTRIES_PER_TASK", 5),
    "MEMORY_ENTRY_MAX_CHARS": env_int("TACX_MEMORY_ENTRY_MAX_CHARS", 500),
    "MEMORY_PROMPT_MAX_CHARS": env_int("TACX_MEMORY_PROMPT_MAX_CHARS", 8000),
    # The publish guard (pipeline/publish_guard.py): the environment variables whose values are
    # never posted or pushed, in any common encoding (empty: its built-in list; names that look
    # like secrets are added either way), and how much a push may add before it is refused unchecked.
    "PUBLISH_SECRET_ENV": [n.strip() for n in os.environ.get("TACX_PUBLISH_SECRET_ENV", "").split(",") if n.strip()],
    "PUBLISH_GUARD_MAX_BYTES": env_int("TACX_PUBLISH_GUARD_MAX_BYTES", 64 * 1024 * 1024),
    "GIT_AUTHOR_NAME": os.environ.get("TACX_GIT_AUTHOR_NAME", "TAC-X"),
    "GIT_AUTHOR_EMAIL": os.environ.get("TACX_GIT_AUTHOR_EMAIL", "tacx@localhost"),
}

GITHUB_API_URL = os.environ.get("GITHUB_API_URL", "https://api.github.com")
GITHUB_TOKEN = os.environ.get("GITHUB_TOKEN", "")
GITHUB_WEBHOOK_SECRET = os.environ.get("GITHUB_WEBHOOK_SECRET", "")
# A GitHub App instead of GITHUB_TOKEN (pipeline/github_auth.py): the App's id and its private key
# (PEM in the variable, `\n` escapes allowed, or a file). Set GITHUB_APP_ID to use it.
GITHUB_APP_ID = os.environ.get("GITHUB_APP_ID", "")
GITHUB_APP_PRIVATE_KEY = os.environ.get("GITHUB_APP_PRIVATE_KEY", "")
GITHUB_APP_PRIVATE_KEY_FILE = os.environ.get("GITHUB_APP_PRIVATE_KEY_FILE", "")
# Trackers that are not forges (pipeline/trackers/). Their secrets (LINEAR_API_KEY,
# LINEAR_WEBHOOK_SECRET, JIRA_API_TOKEN, JIRA_WEBHOOK_SECRET) are read from the environment or from
# the file named by NAME_FILE when used (pipeline/trackers/secrets.py), never stored in settings.
LINEAR_API_URL = os.environ.get("LINEAR_API_URL", "https://api.linear.app/graphql")
# The Linear user (or agent app user) whose assignment or delegation starts a task: its id.
TACX_LINEAR_USER_ID = os.environ.get("TACX_LINEAR_USER_ID", "")
JIRA_BASE_URL = os.environ.get("JIRA_BASE_URL", "")  # https://your-site.atlassian.net
JIRA_EMAIL = os.environ.get("JIRA_EMAIL", "")  # the account the API token belongs to
# The Jira account (accountId) whose assignment starts a task.
TACX_JIRA_ACCOUNT_ID = os.environ.get("TACX_JIRA_ACCOUNT_ID", "")


def secret_from_file(path: str) -> str:
    """The content of a secret file (a mounted secret), stripped; "" without a path."""
    if not path:
        return ""
    with open(path, encoding="utf-8") as handle:
        return handle.read().strip()


def env_or_file(name: str) -> str:
    """A secret from the variable NAME, or from the file named by NAME_FILE (never the database)."""
    return os.environ.get(name, "") or secret_from_file(os.environ.get(f"{name}_FILE", ""))


# GitLab as a forge and tracker (pipeline/gitlab_api.py): gitlab.com or a self-hosted instance
# (a repository's `forge_url` overrides GITLAB_URL); a personal, project or group access token;
# the webhook's secret token; the user issues are assigned to for TAC-X.
GITLAB_URL = os.environ.get("GITLAB_URL", "https://gitlab.com")
GITLAB_TOKEN = os.environ.get("GITLAB_TOKEN", "") or secret_from_file(os.environ.get("GITLAB_TOKEN_FILE", ""))
GITLAB_WEBHOOK_SECRET = os.environ.get("GITLAB_WEBHOOK_SECRET", "") or secret_from_file(os.environ.get("GITLAB_WEBHOOK_SECRET_FILE", ""))
GITLAB_USER = os.environ.get("TACX_GITLAB_USER", "")

# django-q2 is an at-least-once delivery pipe; our own claims and leases decide what runs.
# The ORM broker gives receipts and a transactional enqueue on the same database.
_LONGEST_STAGE_SECONDS = env_int("TACX_Q_TIMEOUT", 3 * 3600)
Q_CLUSTER = {
    "name": "tacx",
    "orm": "default",
    # With a stage host the workers only hand stages to it (milliseconds each): two are plenty.
    # In the previous model (TACX_STAGE_HOST_ATTEMPTS=0) each worker runs one attempt.
    "workers": env_int("TACX_Q_WORKERS", 2),
    "queue_limit": env_int("TACX_Q_WORKERS", 2),
    "bulk": 1,
    "timeout": _LONGEST_STAGE_SECONDS,
    "retry": _LONGEST_STAGE_SECONDS + 600,
    "max_attempts": 1,
    "ack_failures": True,
    "save_limit": 1000,
    "catch_up": False,
    "poll": env_float("TACX_Q_POLL", 0.2),
    "daemonize_workers": False,
    "sync": env_bool("TACX_Q_SYNC", False),
    "log_level": os.environ.get("TACX_Q_LOG_LEVEL", "INFO"),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"redact": {"()": "pipeline.lib.redaction.RedactingFilter"}},
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact"]}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

EMAIL_BACKEND = os.environ.get("EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
