"""Real Claude Code (node_modules/.bin/claude) against the scripted model server."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.cli_runs import (
    CLAUDE_BIN,
    DUMMY_API_KEY,
    claude_argv,
    claude_env,
    git_log,
    jsonl,
    make_git_repo,
    read_lines_until,
    run_agent,
    start_agent,
    stop_agent,
)
from harness.modelserver import ScriptedModelServer, load_script
from tests.conftest import SCRIPTS, needs_cli

pytestmark = needs_cli(CLAUDE_BIN)


@contextmanager
def claude_started(tmp_path: Path, script: str) -> Iterator[tuple[ScriptedModelServer, subprocess.Popen[str]]]:
    """``(server, process)``: claude started on a fresh repository with the prompt "Anything."
    against the named script; the process is stopped on the way out."""
    repo = make_git_repo(tmp_path / "repo")
    with ScriptedModelServer(SCRIPTS / script) as server:
        process = start_agent(claude_argv("Anything."), env=claude_env(server, tmp_path / "home"), cwd=repo)
        try:
            yield server, process
        finally:
            stop_agent(process)


def result_of(stdout: str) -> dict:
    results = [line for line in jsonl(stdout) if line.get("type") == "result"]
    assert len(results) == 1, stdout
    return results[0]


def test_claude_runs_scripted_write_and_bash_tools_and_reports_exact_usage(tmp_path):
    script = load_script(SCRIPTS / "claude-write-bash.yaml")
    repo = make_git_repo(tmp_path / "repo")
    with ScriptedModelServer(script) as server:
        done = run_agent(
            claude_argv("TACX-STAGE: planning\nWrite the plan."),
            env=claude_env(server, tmp_path / "home"),
            cwd=repo,
        )
        records = server.requests
    assert done.returncode == 0, done.stderr
    assert (repo / "plan.md").read_text() == "# Plan\n1. do it\n"
    assert git_log(repo)[0] == "Add plan"
    result = result_of(done.stdout)
    assert result["subtype"] == "success" and result["is_error"] is False
    assert result["result"] == "Plan written and committed."
    turns = script.conversations[0].turns
    for field in (
        "input_tokens",
        "output_tokens",
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
    ):
        expected = sum(getattr(turn.usage, field) for turn in turns)
        assert result["usage"][field] == expected, field
    assert result["total_cost_usd"] > 0
    # One message id per scripted turn: several assistant lines share one id, turns never do.
    ids = {
        line["message"]["id"]
        for line in jsonl(done.stdout)
        if line.get("type") == "assistant"
    }
    assert len(ids) == 2
    model_calls = [r for r in records if r["api"] == "anthropic" and not r["auxiliary"]]
    assert [(r["conversation"], r["turn"]) for r in model_calls] == [
        ("planning", 0),
        ("planning", 1),
    ]
    assert DUMMY_API_KEY not in done.stdout


def test_claude_stops_at_max_turns(tmp_path):
    repo = make_git_repo(tmp_path / "repo")
    with ScriptedModelServer(SCRIPTS / "max-turns.yaml") as server:
        done = run_agent(
            claude_argv("Keep going.", max_turns=1),
            env=claude_env(server, tmp_path / "home"),
            cwd=repo,
        )
    assert done.returncode == 1
    result = result_of(done.stdout)
    assert result["subtype"] == "error_max_turns" and result["is_error"] is True
    assert (
        result["usage"]["input_tokens"] == 1000
        and result["usage"]["output_tokens"] == 77
    )


def test_claude_keeps_retrying_on_401(tmp_path):
    with claude_started(tmp_path, "auth-401.yaml") as (server, process):
        _, retry = read_lines_until(
            process,
            lambda line: (line.get("type") == "system" and line.get("subtype") == "api_retry"),
            timeout=15,
        )
    assert retry is not None
    assert retry["error_status"] == 401 and retry["error"] == "authentication_failed"
    assert all(
        r["status"] == 401 for r in server.requests if r["path"] == "/v1/messages"
    )


def test_claude_fails_fast_on_401_without_retries(tmp_path):
    repo = make_git_repo(tmp_path / "repo")
    with ScriptedModelServer(SCRIPTS / "auth-401.yaml") as server:
        done = run_agent(
            claude_argv("Anything."),
            env=claude_env(
                server, tmp_path / "home", extra={"CLAUDE_CODE_MAX_RETRIES": "0"}
            ),
            cwd=repo,
            timeout=30,
        )
    assert done.returncode == 1
    result = result_of(done.stdout)
    assert result["is_error"] is True and result["api_error_status"] == 401


def test_a_hanging_model_keeps_claude_waiting(tmp_path):
    with claude_started(tmp_path, "hang.yaml") as (server, process):
        record = server.wait_for_requests(1, timeout=15, conversation="stuck")[0]
        assert record["status"] is None
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=1.5)
        assert process.poll() is None


def test_two_concurrent_claude_runs_get_their_own_conversations(tmp_path):
    script = load_script(SCRIPTS / "two-stages.yaml")
    outcomes: dict[str, object] = {}
    with ScriptedModelServer(script) as server:

        def run(stage: str) -> None:
            repo = make_git_repo(tmp_path / stage)
            outcomes[stage] = (
                repo,
                run_agent(
                    claude_argv(f"TACX-STAGE: {stage}\nDo your part."),
                    env=claude_env(server, tmp_path / f"home-{stage}"),
                    cwd=repo,
                ),
            )

        threads = [
            threading.Thread(target=run, args=(s,)) for s in ("planning", "implement")
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
        records = server.requests
    planning_repo, planning = outcomes["planning"]
    implement_repo, implement = outcomes["implement"]
    assert planning.returncode == 0 and implement.returncode == 0
    assert result_of(planning.stdout)["result"] == "Planned."
    assert result_of(implement.stdout)["result"] == "Implemented."
    assert (planning_repo / "plan.md").exists() and not (
        planning_repo / "code.txt"
    ).exists()
    assert (implement_repo / "code.txt").read_text() == "code\n"
    assert result_of(planning.stdout)["usage"]["input_tokens"] == 300
    assert result_of(implement.stdout)["usage"]["input_tokens"] == 700
    for name in ("planning", "implement"):
        assert sorted(r["turn"] for r in records if r["conversation"] == name) == [0, 1]
