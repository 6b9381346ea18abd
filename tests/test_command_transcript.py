"""What a `command` stage says in the transcript: its stdout lines are OUTPUT rows (no model
speaks, so not ASSISTANT), its stderr lines are STDERR rows as they come, bounded and redacted
like everything else an attempt stores."""

from __future__ import annotations

import sys
import time

import pytest
import yaml

from harness import fake_runner
from pipeline import jobs, services
from pipeline.agent_process import run_agent
from pipeline.models import AgentEvent, Task
from pipeline.providers import Invocation, get_provider
from pipeline.providers.base import OUTPUT_LIMIT, STDERR_EVENTS_LIMIT
from tests import conftest


def run_program(script: str, tmp_path, *, fmt: str = "text", stall_timeout: float | None = None, timeout: float = 30):
    """`script` (Python) run by the command provider through the real process loop."""
    provider = get_provider("command")
    inv = Invocation(prompt="p", cwd=str(tmp_path), options={"argv": [sys.executable, "-c", script], "format": fmt})
    parser = provider.parser(inv)
    events = []

    def on_events(batch):
        events.extend(batch)

    proc = run_agent(
        provider.build_command(inv),
        cwd=str(tmp_path),
        env={"PATH": "/usr/bin:/bin"},
        parser=parser,
        timeout=timeout,
        stall_timeout=stall_timeout,
        grace=1,
        on_start=lambda pgid: None,
        on_events=on_events,
        on_tick=lambda: None,
        tick_seconds=0.2,
    )
    return proc, events


def test_stdout_lines_are_output_and_stderr_lines_are_stderr_in_order_of_arrival(tmp_path):
    script = (
        "import sys, time\n"
        "print('compiling', flush=True)\n"
        "print('warning: unused x', file=sys.stderr, flush=True)\n"
        "time.sleep(0.5)\n"
        "print('done', flush=True)\n"
        "print('error: 1 test failed', file=sys.stderr, flush=True)\n"
        "sys.exit(2)\n"
    )
    proc, events = run_program(script, tmp_path)

    assert [(e.kind, e.data["text"]) for e in events if e.kind == "output"] == [("output", "compiling"), ("output", "done")]
    assert [e.data["text"] for e in events if e.kind == "stderr"] == ["warning: unused x", "error: 1 test failed"]
    assert not any(e.kind == "message" for e in events)
    # The warning came while the program slept: it is in the stream before "done".
    kinds = [(e.kind, e.data["text"]) for e in events]
    assert kinds.index(("stderr", "warning: unused x")) < kinds.index(("output", "done"))
    # The failure sentence still quotes stderr's tail.
    assert proc.outcome.success is False and "code 2" in proc.outcome.error and "1 test failed" in proc.outcome.error


def test_a_json_format_command_keeps_its_messages_and_adds_its_stderr(tmp_path):
    line = '{"type":"assistant","message":{"id":"m1","role":"assistant","model":"x","content":[{"type":"text","text":"hi"}]}}'
    script = f"import sys\nprint({line!r})\nprint('a note', file=sys.stderr)\n"
    _, events = run_program(script, tmp_path, fmt="claude-stream-json")
    assert ("message", "hi") in [(e.kind, e.data.get("text")) for e in events]
    assert [e.data["text"] for e in events if e.kind == "stderr"] == ["a note"]


def test_stderr_events_are_bounded_and_the_tail_still_reaches_the_error(tmp_path):
    # 400 KB of short lines, one endless line, then the last words.
    script = (
        "import sys\n"
        "for i in range(8000): sys.stderr.write(f'line {i:05d} ' + 'x' * 38 + '\\n')\n"
        "sys.stderr.write('y' * 100000)\n"
        "sys.stderr.write('\\nthe last words\\n')\n"
        "sys.exit(1)\n"
    )
    proc, events = run_program(script, tmp_path)
    stderr = [e.data["text"] for e in events if e.kind == "stderr"]

    assert sum(len(t) for t in stderr) <= STDERR_EVENTS_LIMIT + 100
    assert all(len(t) <= OUTPUT_LIMIT for t in stderr)
    assert stderr[0].startswith("line 00000") and stderr[-1] == f"[stderr past {STDERR_EVENTS_LIMIT} bytes is not in the transcript]"
    assert "the last words" not in " ".join(stderr)
    assert "the last words" in proc.outcome.error


def test_a_program_that_reports_only_on_stderr_is_not_stalled(tmp_path):
    script = "import sys, time\nfor i in range(6):\n    print(f'step {i}', file=sys.stderr, flush=True)\n    time.sleep(0.4)\n"
    started = time.monotonic()
    proc, events = run_program(script, tmp_path, stall_timeout=1.2)
    assert proc.stop is None and proc.outcome.success, proc.outcome.error
    assert [e.data["text"] for e in events if e.kind == "stderr"] == [f"step {i}" for i in range(6)]
    assert time.monotonic() - started >= 2.0


def test_a_model_cli_parser_does_not_take_stderr(tmp_path):
    assert get_provider("claude").parser(Invocation(prompt="p", cwd=".")).capture_stderr is False
    assert get_provider("command").parser(Invocation(prompt="p", cwd=".", options={"argv": ["x"]})).capture_stderr is True


SECRET = "ghp_" + "A1b2C3d4E5f6G7h8I9j0" * 2


@pytest.mark.django_db(transaction=True)
def test_a_command_attempt_stores_output_and_redacted_stderr_and_the_page_labels_them(local_repository, clone, client, alice):
    # The token is put together at run time: the workflow (shown on the page) does not hold it.
    agent = f"printf '# Plan\\n1. nothing\\n' > plan.md; echo 'wrote the plan'; echo 'token {SECRET[:4]}''{SECRET[4:]} leaked' >&2"
    stage = {"name": "planning", "provider": "command", "timeout": 60, "max_attempts": 1, "options": {"argv": ["/bin/sh", "-c", agent]}}
    conftest.commit_workflow(clone, yaml.safe_dump({"stages": [stage], "publish": "none"}))
    task, _ = services.task_create(repository=local_repository, issue_number=3, title="Plan", body="", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    task = jobs.task_run_inline(task=task)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason

    rows = {e.kind: e.data for e in AgentEvent.objects.filter(task=task, kind__in=["output", "stderr", "message"])}
    assert rows["output"] == {"text": "wrote the plan"}
    assert rows["stderr"] == {"text": "token [REDACTED] leaked"}
    assert "message" not in rows

    client.force_login(alice)
    html = client.get(task.get_absolute_url()).content.decode()
    assert '<div class="role role-output">output</div><pre class="text">wrote the plan</pre>' in html
    assert '<div class="role role-stderr">stderr</div><pre class="text stderr">token [REDACTED] leaked</pre>' in html
    assert 'class="role role-assistant"' not in html and SECRET not in html
    assert 'value="output"' in html and 'value="stderr"' in html  # the transcript's kind filters


@pytest.mark.django_db
def test_the_now_doing_line_of_a_command_stage_is_its_last_output(client, alice, local_repository):
    task = fake_runner.task_running(repository=local_repository, issue_number=4)
    result = fake_runner.stage_claim(task, "planning")
    fake_runner.events_add(result, [("output", {"text": "step 1 of 3"}), ("stderr", {"text": "noise"}), ("output", {"text": "step 2 of 3"})])
    client.force_login(alice)
    html = client.get(task.get_absolute_url()).content.decode()
    assert '<span id="now-doing">step 2 of 3</span>' in html
