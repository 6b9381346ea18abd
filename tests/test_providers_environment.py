"""The agent's environment is scrubbed: forge tokens and secrets never pass; keys only to their owner."""

from __future__ import annotations

import pytest

from pipeline.providers import get_provider
from pipeline.providers.base import Invocation, agent_environment
from pipeline.providers.claude import ClaudeProvider

BASE_ENV = {
    "PATH": "/usr/bin:/bin",
    "HOME": "/home/tacx",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TZ": "UTC",
    "GITHUB_TOKEN": "ghp_forge_push_token_value",
    "GH_TOKEN": "gho_other_forge_token",
    "GITHUB_WEBHOOK_SECRET": "webhook-secret",
    "DJANGO_SECRET_KEY": "django-secret",
    "AWS_SECRET_ACCESS_KEY": "aws-secret",
    "DATABASE_PASSWORD": "db-password",
    "ANTHROPIC_API_KEY": "sk-ant-key",
    "ANTHROPIC_BASE_URL": "http://127.0.0.1:9000",
    "ANTHROPIC_ADMIN_TOKEN": "admin-token",  # matches the ANTHROPIC_ prefix, but is a secret not listed
    "OPENAI_API_KEY": "sk-openai-key",
    "TACX_MODEL_API_KEY": "model-server-key",
    "GEMINI_API_KEY": "gemini-key",
    "OPENCODE_API_KEY": "opencode-key",
    "DATABASE_URL": "postgres://u:p@db/tacx",
    "REDIS_URL": "redis://localhost",
}
INV = Invocation(prompt="p", cwd="/w")
NEVER = {"GITHUB_TOKEN", "GH_TOKEN", "GITHUB_WEBHOOK_SECRET", "DJANGO_SECRET_KEY", "AWS_SECRET_ACCESS_KEY", "DATABASE_PASSWORD", "ANTHROPIC_ADMIN_TOKEN"}
OWN_KEYS = {
    "claude": {"ANTHROPIC_API_KEY"},
    "codex": {"OPENAI_API_KEY", "TACX_MODEL_API_KEY"},
    "gemini": {"GEMINI_API_KEY"},
    "qwen": {"OPENAI_API_KEY"},  # Qwen Code's OpenAI-compatible auth reads OpenAI's variable
    "opencode": {"OPENCODE_API_KEY"},
    "command": set(),
}
ALL_KEYS = set().union(*OWN_KEYS.values())


@pytest.mark.parametrize("name", list(OWN_KEYS))
def test_forge_tokens_and_secrets_never_reach_an_agent(name):
    env = agent_environment(get_provider(name), INV, BASE_ENV)

    assert not NEVER & set(env)
    assert "DATABASE_URL" not in env and "REDIS_URL" not in env


@pytest.mark.parametrize("name", list(OWN_KEYS))
def test_each_agent_gets_only_its_own_api_keys(name):
    env = agent_environment(get_provider(name), INV, BASE_ENV)

    assert ALL_KEYS & set(env) == OWN_KEYS[name]
    for key in OWN_KEYS[name]:
        assert env[key] == BASE_ENV[key]


@pytest.mark.parametrize("name", list(OWN_KEYS))
def test_the_basic_variables_pass(name):
    env = agent_environment(get_provider(name), INV, BASE_ENV)

    for key in ("PATH", "HOME", "LANG", "LC_ALL", "TZ"):
        assert env[key] == BASE_ENV[key]


def test_claude_gets_its_sandbox_and_quiet_settings_and_its_base_url():
    env = agent_environment(get_provider("claude"), INV, BASE_ENV)

    assert env["IS_SANDBOX"] == "1"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["DISABLE_AUTOUPDATER"] == "1"
    assert env["ANTHROPIC_BASE_URL"] == BASE_ENV["ANTHROPIC_BASE_URL"]


def test_a_base_url_option_overrides_the_inherited_one():
    inv = Invocation(prompt="p", cwd="/w", options={"base_url": "http://127.0.0.1:7000"})

    assert agent_environment(get_provider("claude"), inv, BASE_ENV)["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:7000"


def test_codex_home_comes_from_the_options_and_is_created(tmp_path):
    home = tmp_path / "codex-home"
    inv = Invocation(prompt="p", cwd="/w", options={"codex_home": str(home)})

    assert agent_environment(get_provider("codex"), inv, BASE_ENV)["CODEX_HOME"] == str(home)
    assert home.is_dir()  # codex exits 1 when CODEX_HOME does not exist


def test_a_provider_cannot_pass_the_forge_token_even_by_listing_it():
    class Leaky(ClaudeProvider):
        passthrough_env = ("GITHUB_TOKEN", "GH_TOKEN", "GITHUB_")

        def environment(self, inv):
            return {"GITHUB_WEBHOOK_SECRET": "set-by-provider"}

    env = agent_environment(Leaky(), INV, BASE_ENV)

    assert not {"GITHUB_TOKEN", "GH_TOKEN", "GITHUB_WEBHOOK_SECRET"} & set(env)


def test_a_command_stage_may_set_literal_variables_but_not_the_forge_token():
    inv = Invocation(prompt="p", cwd="/w", options={"argv": ["x"], "env": {"MY_FLAG": "1", "GITHUB_TOKEN": "$GITHUB_TOKEN"}})

    env = agent_environment(get_provider("command"), inv, BASE_ENV)

    assert env["MY_FLAG"] == "1"
    assert "GITHUB_TOKEN" not in env


def test_the_process_environment_is_the_default_base(monkeypatch):
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_from_the_process")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-from-the-process")

    env = agent_environment(get_provider("claude"), INV)

    assert "GITHUB_TOKEN" not in env
    assert env["ANTHROPIC_API_KEY"] == "sk-ant-from-the-process"
