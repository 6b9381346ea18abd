"""build_command gives an argv list; the prompt is one element, unchanged, never shell-parsed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.providers import get_provider
from pipeline.providers.base import Invocation, ProviderError

NASTY = "$(rm -rf /); `x` && ../../etc"


@pytest.fixture
def bin_dir(settings, tmp_path) -> Path:
    """Stand-in executables, so argv building does not depend on what is installed."""
    directory = tmp_path / "bin"
    directory.mkdir()
    for name in ("claude", "codex", "gemini", "qwen", "opencode", "my-agent"):
        exe = directory / name
        exe.write_text("#!/bin/sh\necho 1.2.3\n")
        exe.chmod(0o755)
    settings.TACX = {**settings.TACX, "AGENT_BIN_DIRS": [str(directory)]}
    return directory


def inv(**kw) -> Invocation:
    return Invocation(**{"prompt": NASTY, "cwd": "/work/tree", **kw})


@pytest.mark.parametrize("name", ["claude", "codex", "gemini", "qwen", "opencode"])
def test_the_prompt_with_shell_metacharacters_is_one_argv_element_unchanged(bin_dir, name):
    argv = get_provider(name).build_command(inv())

    assert isinstance(argv, list)
    assert all(isinstance(a, str) for a in argv)
    assert argv.count(NASTY) == 1
    assert argv[0] == str(bin_dir / name)


def test_claude_argv_has_stream_json_verbose_and_the_stage_flags(bin_dir):
    provider = get_provider("claude")
    invocation = inv(model="claude-sonnet-4-5", max_turns=12, permission_mode="acceptEdits", allowed_tools=("Bash", "Write"), extra_args=("--append-system-prompt", "be brief"))

    argv = provider.build_command(invocation)

    assert argv[1:5] == ["-p", "--output-format", "stream-json", "--verbose"]
    assert argv[argv.index("--model") + 1] == "claude-sonnet-4-5"
    assert argv[argv.index("--max-turns") + 1] == "12"
    assert argv[argv.index("--permission-mode") + 1] == "acceptEdits"
    assert argv[argv.index("--allowedTools") + 1 : argv.index("--allowedTools") + 3] == ["Bash", "Write"]
    assert argv[-4:] == ["--append-system-prompt", "be brief", "--", NASTY]


def test_claude_leaves_out_flags_that_are_not_set(bin_dir):
    argv = get_provider("claude").build_command(inv())

    assert argv[1:] == ["-p", "--output-format", "stream-json", "--verbose", "--include-partial-messages", "--", NASTY]


def test_codex_argv_has_json_cwd_model_sandbox_and_the_custom_model_provider(bin_dir):
    invocation = inv(model="gpt-5", options={"base_url": "http://127.0.0.1:8123/v1", "sandbox": "workspace-write", "config": {"model_reasoning_effort": "low"}})

    argv = get_provider("codex").build_command(invocation)

    assert argv[1:6] == ["exec", "--json", "--skip-git-repo-check", "-C", "/work/tree"]
    assert argv[argv.index("-m") + 1] == "gpt-5"
    assert argv[argv.index("--sandbox") + 1] == "workspace-write"
    configs = [argv[i + 1] for i, a in enumerate(argv) if a == "-c"]
    assert configs == [
        "features.plugins=false",
        "analytics.enabled=false",
        "model_provider=tacx",
        'model_providers.tacx={name = "tacx", base_url = "http://127.0.0.1:8123/v1", wire_api = "responses", env_key = "TACX_MODEL_API_KEY"}',
        'model_reasoning_effort="low"',
    ]
    assert argv[-2:] == ["--", NASTY]


@pytest.mark.parametrize(
    "options",
    [{"sandbox": "yolo"}, {"base_url": "ftp://x"}, {"config": "model=o3"}, {"config": {"bad key": 1}}],
)
def test_codex_rejects_bad_options_permanently(bin_dir, options):
    with pytest.raises(ProviderError) as caught:
        get_provider("codex").build_command(inv(options=options))

    assert caught.value.permanent is True


def test_gemini_and_qwen_default_to_yolo_or_their_write_and_shell_tools_are_not_offered(bin_dir):
    for name in ("gemini", "qwen"):
        argv = get_provider(name).build_command(inv())

        assert argv[argv.index("--approval-mode") + 1] == "yolo"


def test_qwen_argv_has_stream_json_openai_auth_model_and_turn_limit(bin_dir):
    argv = get_provider("qwen").build_command(inv(model="qwen3-coder-plus", max_turns=7, permission_mode="auto_edit"))

    assert argv[1:5] == ["-o", "stream-json", "--auth-type", "openai"]
    assert argv[argv.index("-m") + 1] == "qwen3-coder-plus"
    assert argv[argv.index("--max-session-turns") + 1] == "7"
    assert argv[argv.index("--approval-mode") + 1] == "auto_edit"
    assert argv[-2:] == ["-p", NASTY]


def test_opencode_argv_runs_json_auto_on_the_tacx_provider_unless_one_is_named(bin_dir):
    argv = get_provider("opencode").build_command(inv(model="glm-4.6", max_turns=5))

    assert argv[1:5] == ["run", "--format", "json", "--auto"]
    assert argv[argv.index("-m") + 1] == "tacx/glm-4.6"
    assert "5" not in argv  # no turn-limit flag: the parser enforces it
    assert get_provider("opencode").build_command(inv(model="openrouter/x"))[6] == "openrouter/x"


def test_gemini_argv_has_stream_json_model_and_approval_mode(bin_dir):
    argv = get_provider("gemini").build_command(inv(model="gemini-2.5-pro", permission_mode="yolo"))

    assert argv[1:3] == ["-o", "stream-json"]
    assert argv[argv.index("-m") + 1] == "gemini-2.5-pro"
    assert argv[argv.index("--approval-mode") + 1] == "yolo"
    assert argv[-2:] == ["-p", NASTY]


@pytest.mark.parametrize("name", ["claude", "codex", "gemini", "qwen", "opencode"])
def test_a_prompt_that_looks_like_an_option_is_not_read_as_one(bin_dir, name):
    argv = get_provider(name).build_command(inv(prompt="--help me"))

    prompt_at = next(i for i, a in enumerate(argv) if a.endswith("--help me"))
    assert prompt_at == len(argv) - 1
    if name in ("gemini", "qwen"):  # yargs: the = form keeps a leading dash in the value
        assert argv[-1] == "--prompt=--help me"
    else:  # clap and commander: everything after -- is positional
        assert argv[-2:] == ["--", "--help me"]


def test_a_missing_agent_program_is_a_permanent_error_naming_it(settings, tmp_path, monkeypatch):
    settings.TACX = {**settings.TACX, "AGENT_BIN_DIRS": [str(tmp_path / "empty")]}
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))

    with pytest.raises(ProviderError) as caught:
        get_provider("gemini").build_command(inv())

    assert caught.value.permanent is True
    assert "'gemini'" in caught.value.message
    assert str(tmp_path / "empty") in caught.value.message


def test_agent_bin_dirs_win_over_path(bin_dir, tmp_path, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    (other / "claude").write_text("#!/bin/sh\n")
    (other / "claude").chmod(0o755)
    monkeypatch.setenv("PATH", f"{other}{os.pathsep}{os.environ['PATH']}")

    assert get_provider("claude").build_command(inv())[0] == str(bin_dir / "claude")


def test_version_runs_the_program_once_and_extracts_the_number(bin_dir):
    (bin_dir / "codex").write_text(f"#!/bin/sh\necho run >> {bin_dir}/calls\necho 'codex-cli 0.169.0'\n")

    assert get_provider("codex").version() == "0.169.0"
    assert get_provider("codex").version() == "0.169.0"
    assert (bin_dir / "calls").read_text().count("run") == 1


def test_version_is_empty_when_the_program_fails(bin_dir):
    (bin_dir / "gemini").write_text("#!/bin/sh\nexit 3\n")

    assert get_provider("gemini").version() == ""
