"""`run_hook`: the repository's commands run in the worktree in order, their output is kept
(secrets blanked), a timeout or a stop kills the whole process group, and `setup_env` secrets
reach `setup` and `test_command` only."""

from __future__ import annotations

import sys

from pipeline.agent_process import group_alive
from pipeline.hooks import hook_environment, run_hook, secret_values
from pipeline.workflow import HookConfig, load_workflow_text


def hook(*commands: str, timeout: int = 30, name: str = "setup") -> HookConfig:
    return HookConfig(name=name, run=tuple(commands), timeout=timeout)


def test_commands_run_in_order_in_the_worktree_and_their_output_is_kept(tmp_path):
    run = run_hook(hook("echo first", "pwd", "echo oops >&2"), cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert run.ok and run.status == "passed" and run.exit_code == 0
    assert run.output.splitlines() == ["$ echo first", "first", "$ pwd", str(tmp_path), "$ echo oops >&2", "oops"]


def test_the_first_failing_command_stops_the_hook_with_its_exit_code(tmp_path):
    run = run_hook(hook("echo before", "exit 3", "touch never-made"), cwd=tmp_path, env={"PATH": "/usr/bin:/bin"})
    assert not run.ok and run.status == "failed" and run.exit_code == 3 and run.command == "exit 3"
    assert not (tmp_path / "never-made").exists()
    assert "setup failed (exit 3" in run.summary()


def test_a_timeout_kills_the_hooks_whole_process_group(tmp_path):
    # A background grandchild that would outlive a kill of the shell alone.
    pgid_file = tmp_path / "pgid"
    script = f"import os, subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); open({str(pgid_file)!r}, 'w').write(str(os.getpgid(0))); time.sleep(600)"
    started: list[int] = []
    run = run_hook(hook(f'{sys.executable} -c "{script}"', timeout=3), cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, grace=0.5, on_start=started.append)
    assert run.status == "timed_out" and run.exit_code is None and run.reason == "timed out after 3 s"
    pgid = int(pgid_file.read_text())
    assert started == [pgid]
    assert not group_alive(pgid), "a process of the hook's group survived"


def test_a_stop_request_kills_the_hook_and_says_why(tmp_path):
    asked = []

    def should_stop():
        asked.append(1)
        return "task cancelled while the hook ran" if len(asked) >= 2 else None

    run = run_hook(hook("sleep 600"), cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, grace=0.5, should_stop=should_stop, poll_seconds=0.05)
    assert run.status == "stopped" and run.reason == "task cancelled while the hook ran"


def test_background_processes_left_by_a_passing_command_are_killed(tmp_path):
    pid_file = tmp_path / "pid"
    run = run_hook(hook(f"sleep 600 & echo $! > {pid_file}"), cwd=tmp_path, env={"PATH": "/usr/bin:/bin"}, grace=0.5)
    assert run.ok
    import os

    pid = int(pid_file.read_text())
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as fh:
            alive = fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except ProcessLookupError:
        alive = False
    assert not alive


def test_setup_env_secrets_reach_setup_and_tests_only_and_are_blanked_in_the_output(tmp_path):
    wf = load_workflow_text("test_command: make test\nsetup_env: [NPM_TOKEN, PLAIN_SECRET]\nhooks: {setup: make, before_stage: make}\n")
    base = {"PATH": "/usr/bin:/bin", "NPM_TOKEN": "npm_abcdefgh12345678", "PLAIN_SECRET": "hunter2-but-longer", "GITHUB_TOKEN": "ghp_x", "OTHER": "y"}
    envs = {name: hook_environment(name, workflow=wf, worktree=tmp_path, context={"task_id": 4}, base_env=base) for name in ("setup", "test_command", "before_stage", "after_stage", "cleanup")}
    for name in ("setup", "test_command"):
        assert envs[name]["NPM_TOKEN"] == "npm_abcdefgh12345678" and envs[name]["PLAIN_SECRET"] == "hunter2-but-longer", name
    for name in ("before_stage", "after_stage", "cleanup"):
        assert "NPM_TOKEN" not in envs[name] and "PLAIN_SECRET" not in envs[name], name
    for env in envs.values():
        assert "GITHUB_TOKEN" not in env and "OTHER" not in env
        assert env["TACX_TASK_ID"] == "4" and env["TACX_WORKTREE"] == str(tmp_path)
    env = envs["setup"]
    run = run_hook(hook('echo "token=$NPM_TOKEN plain=$PLAIN_SECRET"'), cwd=tmp_path, env=env, secret_values=secret_values("setup", workflow=wf, env=env))
    assert "npm_abcdefgh12345678" not in run.output and "hunter2-but-longer" not in run.output
    assert "plain=[REDACTED]" in run.output
