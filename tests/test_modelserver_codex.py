"""Real Codex CLI (node_modules/.bin/codex) against the scripted model server."""

from __future__ import annotations

import time
from pathlib import Path

from harness.cli_runs import (
    CODEX_BIN,
    DUMMY_API_KEY,
    codex_argv,
    codex_env,
    git_log,
    jsonl,
    make_git_repo,
    run_agent,
    start_agent,
    stop_agent,
)
from harness.modelserver import ScriptedModelServer, load_script
from tests.conftest import SCRIPTS, needs_cli

pytestmark = needs_cli(CODEX_BIN)


def fail_fast_run(server: ScriptedModelServer, repo: Path, tmp_path: Path) -> dict:
    """The argv, env and cwd of a fail-fast codex run with the prompt "Anything."."""
    argv = codex_argv(server, repo, "Anything.", fail_fast=True)
    return {"argv": argv, "env": codex_env(tmp_path / "home", tmp_path / "codex-home"), "cwd": repo}


def events_of(stdout: str, kind: str) -> list[dict]:
    return [line for line in jsonl(stdout) if line.get("type") == kind]


def test_codex_runs_a_scripted_shell_command_and_reports_cumulative_usage(tmp_path):
    script = load_script(SCRIPTS / "codex-shell.yaml")
    repo = make_git_repo(tmp_path / "repo")
    with ScriptedModelServer(script) as server:
        done = run_agent(
            codex_argv(server, repo, "Create the file."),
            env=codex_env(tmp_path / "home", tmp_path / "codex-home"),
            cwd=repo,
        )
        records = server.requests
    assert done.returncode == 0, done.stderr
    assert (repo / "codex-made.txt").read_text() == "made by codex\n"
    commands = [
        e["item"]
        for e in events_of(done.stdout, "item.completed")
        if e["item"]["type"] == "command_execution"
    ]
    assert commands and commands[0]["exit_code"] == 0
    assert commands[0]["aggregated_output"] == "created\n"
    messages = [
        e["item"]["text"]
        for e in events_of(done.stdout, "item.completed")
        if e["item"]["type"] == "agent_message"
    ]
    assert messages == ["Creating the file.", "File created."]
    # Codex sums every response of the turn; its input_tokens include cached and cache-write
    # tokens (OpenAI semantics), which the server adds to the script's input_tokens.
    turns = script.conversations[0].turns

    def total(field: str) -> int:
        return sum(getattr(t.usage, field) for t in turns)

    (completed,) = events_of(done.stdout, "turn.completed")
    assert completed["usage"] == {
        "input_tokens": total("input_tokens")
        + total("cache_read_input_tokens")
        + total("cache_creation_input_tokens"),
        "cached_input_tokens": total("cache_read_input_tokens"),
        "cache_write_input_tokens": total("cache_creation_input_tokens"),
        "output_tokens": total("output_tokens"),
        "reasoning_output_tokens": total("reasoning_tokens"),
    }
    assert [(r["api"], r["conversation"], r["turn"]) for r in records] == [
        ("openai", "implement", 0),
        ("openai", "implement", 1),
    ]
    assert DUMMY_API_KEY not in done.stdout


def test_codex_writes_and_commits_with_full_access(tmp_path):
    script = {
        "conversations": [
            {
                "name": "commit",
                "turns": [
                    {
                        "tool_calls": [
                            {
                                "write": {
                                    "path": "docs/note.md",
                                    "content": 'it\'s "quoted"\n',
                                }
                            },
                            {"bash": "git add -A && git commit -q -m 'Codex note'"},
                        ]
                    },
                    {"text": "Committed."},
                ],
            }
        ]
    }
    repo = make_git_repo(tmp_path / "repo")
    with ScriptedModelServer(script) as server:
        done = run_agent(
            codex_argv(server, repo, "Commit a note.", sandbox="danger-full-access"),
            env=codex_env(tmp_path / "home", tmp_path / "codex-home"),
            cwd=repo,
        )
    assert done.returncode == 0, done.stderr
    assert (repo / "docs" / "note.md").read_text() == 'it\'s "quoted"\n'
    assert git_log(repo)[0] == "Codex note"


def test_codex_fails_the_turn_on_401(tmp_path):
    repo = make_git_repo(tmp_path / "repo")
    with ScriptedModelServer(SCRIPTS / "auth-401.yaml") as server:
        done = run_agent(**fail_fast_run(server, repo, tmp_path), timeout=30)
        records = server.requests
    assert done.returncode == 1
    (failed,) = events_of(done.stdout, "turn.failed")
    assert "401 Unauthorized" in failed["error"]["message"]
    assert [r["status"] for r in records] == [401]


def test_a_hanging_model_keeps_codex_waiting(tmp_path):
    repo = make_git_repo(tmp_path / "repo")
    with ScriptedModelServer(SCRIPTS / "hang.yaml") as server:
        process = start_agent(**fail_fast_run(server, repo, tmp_path))
        try:
            (record,) = server.wait_for_requests(1, timeout=15, conversation="stuck")
            assert record["status"] is None
            time.sleep(1)
            assert process.poll() is None
        finally:
            stop_agent(process)
