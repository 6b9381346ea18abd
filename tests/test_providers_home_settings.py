"""What the gemini, qwen and opencode providers write into an attempt's private HOME and
environment: the CLI's headless, offline-safe settings; keys never in a configuration text."""

from __future__ import annotations

import json

import pytest

from pipeline.providers import get_provider
from pipeline.providers.base import Invocation, ProviderError, agent_environment

INV = Invocation(prompt="p", cwd="/w", model="gemini-2.5-pro", max_turns=12, options={"base_url": "http://127.0.0.1:7000"})


def test_gemini_settings_select_api_key_auth_and_turn_off_trust_telemetry_and_updates(tmp_path):
    get_provider("gemini").prepare_home(str(tmp_path), INV, {})

    settings = json.loads((tmp_path / ".gemini" / "settings.json").read_text())
    assert settings["security"] == {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": False}}
    assert settings["privacy"]["usageStatisticsEnabled"] is False and settings["telemetry"]["enabled"] is False
    assert settings["general"]["enableAutoUpdate"] is False
    assert settings["model"]["maxSessionTurns"] == 12
    assert settings["general"]["maxAttempts"] == 3  # TACX["GEMINI_MAX_ATTEMPTS"]


def test_gemini_max_attempts_comes_from_the_stage_option_and_is_validated(tmp_path):
    provider = get_provider("gemini")
    provider.prepare_home(str(tmp_path), Invocation(prompt="p", cwd="/w", options={"max_attempts": 1}), {})
    settings = json.loads((tmp_path / ".gemini" / "settings.json").read_text())
    assert settings["general"]["maxAttempts"] == 1 and settings["model"]["maxSessionTurns"] == -1

    with pytest.raises(ProviderError, match="max_attempts must be a positive integer") as caught:
        provider.prepare_home(str(tmp_path), Invocation(prompt="p", cwd="/w", options={"max_attempts": "lots"}), {})
    assert caught.value.permanent


def test_gemini_base_url_option_becomes_its_variable_and_the_sandbox_host():
    provider = get_provider("gemini")
    env = agent_environment(provider, INV, {"PATH": "/bin", "GOOGLE_CLOUD_PROJECT": "x", "GEMINI_API_KEY": "k"})

    assert env["GOOGLE_GEMINI_BASE_URL"] == "http://127.0.0.1:7000"
    assert "GOOGLE_CLOUD_PROJECT" not in env  # only its own key and base URL pass
    assert provider.api_url(env) == "http://127.0.0.1:7000"
    assert provider.api_url({}) == "https://generativelanguage.googleapis.com"


def test_qwen_settings_and_environment_pin_the_base_url_and_stop_the_memory_subagent(tmp_path):
    provider = get_provider("qwen")
    inv = Invocation(prompt="p", cwd="/w", model="qwen3-coder-plus", options={"max_retries": 0})
    provider.prepare_home(str(tmp_path), inv, {})
    env = agent_environment(provider, inv, {"PATH": "/bin", "OPENAI_API_KEY": "k"})

    settings = json.loads((tmp_path / ".qwen" / "settings.json").read_text())
    assert settings["security"]["auth"]["selectedType"] == "openai"
    assert settings["model"]["generationConfig"]["maxRetries"] == 0
    assert settings["memory"]["enableManagedAutoMemory"] is False
    # Always set, so a .env in the worktree cannot send the key elsewhere.
    assert env["OPENAI_BASE_URL"] == "https://api.openai.com/v1" and env["OPENAI_MODEL"] == "qwen3-coder-plus"


def test_opencode_config_names_the_key_variable_not_the_key_and_prices_the_model():
    provider = get_provider("opencode")
    inv = Invocation(prompt="p", cwd="/w", model="glm-4.6", options={"base_url": "http://127.0.0.1:7000/v1"})
    env = agent_environment(provider, inv, {"PATH": "/bin", "OPENCODE_API_KEY": "sk-secret-value"})

    config = json.loads(env["OPENCODE_CONFIG_CONTENT"])
    tacx = config["provider"]["tacx"]
    assert tacx["options"] == {"baseURL": "http://127.0.0.1:7000/v1", "apiKey": "{env:OPENCODE_API_KEY}"}
    assert "sk-secret-value" not in env["OPENCODE_CONFIG_CONTENT"]
    assert tacx["models"]["glm-4.6"]["cost"] == {"input": 0.6, "output": 2.2, "cache_read": 0.11, "cache_write": 0.6}
    assert config["model"] == "tacx/glm-4.6" and config["autoupdate"] is False
    assert env["OPENCODE_DISABLE_MODELS_FETCH"] == "1"
    assert provider.api_url(env) == "http://127.0.0.1:7000/v1"
