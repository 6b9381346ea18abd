"""How the real Gemini CLI, Qwen Code and opencode fail, and how TAC-X words it: each CLI runs
from node_modules against the scripted model server, built by its provider (argv, scrubbed
environment, private HOME with its settings) and read by the stage runner's process loop."""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from harness.cli_runs import BIN_DIR, CLI_VERSIONS, DUMMY_API_KEY, make_git_repo, provider_command
from harness.modelserver import ScriptedModelServer
from pipeline.agent_process import run_agent

pytestmark = [pytest.mark.cli]

PROVIDERS = ["gemini", "qwen", "opencode"]
MODELS = {"gemini": "gemini-2.5-pro", "qwen": "qwen3-coder-plus", "opencode": "glm-4.6"}
LOOP = {"conversations": [{"name": "loop", "turns": [{"tool_calls": [{"bash": f"echo {i} >> loop.txt"}], "usage": {"input_tokens": 100 + i, "output_tokens": 5}} for i in range(6)]}]}


def run_cli(name: str, script: dict, tmp_path: Path, **kwargs):
    """``(process result, events, seconds, server records)`` of one run of provider ``name``."""
    repo = make_git_repo(tmp_path / "repo")
    events: list = []
    with ScriptedModelServer(script) as server:
        provider, inv, argv, env = provider_command(name, server, repo, tmp_path / "home", prompt="TACX-STAGE: planning\nWrite plan.md", model=MODELS[name], **kwargs)
        parser = provider.parser(inv)
        started = time.monotonic()
        result = run_agent(
            argv,
            cwd=str(repo),
            env=env,
            parser=parser,
            timeout=90,
            stall_timeout=None,
            grace=1.0,
            on_start=lambda pgid: None,
            on_events=lambda batch: events.extend(batch),
            on_tick=lambda: None,
            tick_seconds=0.5,
        )
        return result, events, time.monotonic() - started, server.requests


@pytest.mark.parametrize("name", PROVIDERS)
def test_an_authentication_failure_fails_in_seconds_and_is_permanent(name, tmp_path):
    script = {"conversations": [{"name": "any", "turns": [{"status": 401, "error_message": "API key not valid (scripted)"}]}]}

    result, _, seconds, requests = run_cli(name, script, tmp_path)

    assert not result.outcome.success
    assert result.outcome.error.startswith("agent could not authenticate (HTTP 401 from the model API)")
    assert result.outcome.permanent
    assert seconds < 20, f"took {seconds:.1f} s"
    assert [r["status"] for r in requests if not r["auxiliary"]] == [401]  # never retried


@pytest.mark.parametrize("name", PROVIDERS)
def test_the_turn_limit_is_a_clear_failure_with_the_usage_spent_so_far(name, tmp_path):
    result, _, _, requests = run_cli(name, LOOP, tmp_path, max_turns=2)

    outcome = result.outcome
    assert not outcome.success and not outcome.permanent
    assert "turn limit" in outcome.error and "2" in outcome.error
    # The two answered calls are recorded exactly (OpenAI/Gemini semantics normalised).
    assert (outcome.usage.input_tokens, outcome.usage.output_tokens) == (100 + 101, 10)
    assert len([r for r in requests if r["status"] == 200 and not r["auxiliary"]]) <= 3
    assert outcome.usage.cli_version == CLI_VERSIONS[name]


@pytest.mark.parametrize(
    ("name", "options", "calls"),
    [
        ("gemini", {"max_attempts": 2}, 2),  # general.maxAttempts in the private settings
        ("qwen", {"max_retries": 0}, 7),  # Qwen Code's own 7 attempts, no SDK retries on top
        ("opencode", {}, 6),  # opencode: 1 call + 5 retries
    ],
)
def test_rate_limiting_is_retried_a_bounded_number_of_times_then_fails(name, options, calls, tmp_path):
    # The server says how long to wait (Retry-After), as real APIs do, so the test takes seconds.
    script = {"conversations": [{"name": "any", "turns": [{"status": 429, "error_message": "Resource exhausted (scripted 429)", "retry_after": 0.1}]}]}

    result, _, seconds, requests = run_cli(name, script, tmp_path, options=options)

    outcome = result.outcome
    assert not outcome.success and not outcome.permanent
    assert "HTTP 429" in outcome.error
    assert [r["status"] for r in requests if not r["auxiliary"]] == [429] * calls
    assert seconds < 60, f"took {seconds:.1f} s"


@pytest.mark.parametrize("name", PROVIDERS)
def test_a_malformed_line_becomes_a_raw_event_and_the_run_still_succeeds(name, tmp_path, settings):
    # The real CLI behind a wrapper that first prints a line that is not JSON and one that is
    # JSON of an unknown shape.
    wrapper_dir = tmp_path / "bin"
    wrapper_dir.mkdir()
    wrapper = wrapper_dir / name
    wrapper.write_text(f'#!/bin/sh\necho "<<garbage from {name}>>"\necho \'{{"type": 42}}\'\nexec {BIN_DIR / name} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    settings.TACX = {**settings.TACX, "AGENT_BIN_DIRS": [str(wrapper_dir)]}
    script = {"conversations": [{"name": "any", "turns": [{"text": "All done.", "usage": {"input_tokens": 70, "output_tokens": 7}}]}]}

    result, events, _, _ = run_cli(name, script, tmp_path)

    assert result.outcome.success, result.outcome.error
    raws = [e.data for e in events if e.kind == "raw"]
    assert [r["line"] for r in raws] == [f"<<garbage from {name}>>", '{"type": 42}']
    assert result.outcome.final_text == "All done."
    assert (result.outcome.usage.input_tokens, result.outcome.usage.output_tokens) == (70, 7)


@pytest.mark.parametrize("name", PROVIDERS)
def test_the_cli_gets_only_its_own_key_and_base_url(name, tmp_path):
    repo = make_git_repo(tmp_path / "repo")
    _, _, argv, env = provider_command(name, "http://127.0.0.1:9", repo, tmp_path / "home", prompt="-p $(rm -rf /)", model=MODELS[name])

    assert isinstance(argv, list) and os.path.isabs(argv[0])
    assert argv[-1] in ("-p $(rm -rf /)", "--prompt=-p $(rm -rf /)")  # one argument, never a shell string
    assert DUMMY_API_KEY in env.values()
    keys = {k for k, v in env.items() if v == DUMMY_API_KEY}
    assert len(keys) == 1
    assert env["HOME"] == str(tmp_path / "home") and env["TMPDIR"] == str(tmp_path / "home" / "tmp")


@pytest.mark.parametrize("name", PROVIDERS)
def test_a_run_downloads_nothing_into_its_private_home(name, tmp_path):
    # opencode 1.18 installs @opencode-ai/plugin from the npm registry into ~/.config/opencode at
    # start-up unless npm is offline (found with strace: registry.npmjs.org on port 443).
    script = {"conversations": [{"name": "any", "turns": [{"text": "Nothing to do.", "usage": {"input_tokens": 5, "output_tokens": 1}}]}]}

    result, _, _, _ = run_cli(name, script, tmp_path)

    assert result.outcome.success, result.outcome.error
    home = tmp_path / "home"
    assert not list(home.rglob("node_modules"))
    assert not list(home.rglob("*.tgz")) and not [p for p in home.rglob("_cacache/content-v2/*/*") if p.is_dir()]
