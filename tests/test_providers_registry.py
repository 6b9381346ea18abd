"""The provider registry: a name maps to a class; an unknown name is a permanent, helpful error."""

from __future__ import annotations

import pytest

from pipeline.providers import PROVIDERS, get_provider
from pipeline.providers.base import Provider, ProviderError


def test_every_registered_name_gives_an_instance_of_its_class():
    for name, cls in PROVIDERS.items():
        provider = get_provider(name)
        assert type(provider) is cls
        assert isinstance(provider, Provider)
        assert provider.name == name


def test_the_registry_has_the_design_providers_and_qwen_and_opencode():
    assert set(PROVIDERS) == {"claude", "codex", "gemini", "qwen", "opencode", "command"}


def test_the_workflow_accepts_every_registered_provider():
    from pipeline.workflow import AGENT_PROVIDERS

    assert set(AGENT_PROVIDERS) == set(PROVIDERS)


def test_an_unknown_provider_is_a_permanent_error_naming_the_known_ones():
    with pytest.raises(ProviderError) as caught:
        get_provider("aider")

    assert caught.value.permanent is True
    assert "'aider'" in caught.value.message
    for name in PROVIDERS:
        assert name in caught.value.message


def test_a_provider_error_is_transient_unless_said_otherwise():
    assert ProviderError("connection reset").permanent is False
    assert str(ProviderError("x", permanent=True)) == "x"
