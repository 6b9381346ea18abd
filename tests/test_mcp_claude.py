"""MCP servers with the real `claude` CLI against the scripted model server (issue 27, section 2).

The workflow declares a stdio server for the planning stage only: a real MCP server written
with the `mcp` SDK (tests/agents/mcp_docs.py), given a plain setting and a secret from TAC-X's
environment. The model asks claude to call its tools; claude spawns the server inside the
attempt's sandbox and calls them without a prompt (TAC-X granted `mcp__docs` and nothing more).
The transcript shows the calls as tool calls of server `docs` with the server's answers, the
secret redacted; the server could read its worktree but not a file outside it, could not reach
a host the stage does not allow; the building stage, which names no server, never saw the
secret or the server's configuration. A second test serves the same tools over streamable HTTP
on an allowed loopback port, behind an Authorization header built from a secret.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.template.loader import render_to_string

from dashboard.rendering import event_summary
from harness.cli_runs import CLAUDE_BIN
from pipeline import jobs, services
from pipeline.models import AgentEvent, StageResult, Task
from tests.conftest import ROOT, commit_workflow, needs_cli, point_claude_at, wait_for

pytestmark = [*needs_cli(CLAUDE_BIN), pytest.mark.django_db(transaction=True)]

SERVER = str(ROOT / "tests" / "agents" / "mcp_docs.py")
USAGE = {"input_tokens": 900, "output_tokens": 40}


class Counting(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - http.server's name
        self.server.hits += 1
        body = b"UNLISTED-HOST-ANSWER"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def unlisted_host():
    """An HTTP server on loopback that no stage allows; it counts the requests that reach it."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    server.hits = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def script(outside: str, unlisted_url: str) -> dict:
    def call(name: str, **arguments) -> dict:
        return {"tool": {"name": f"mcp__docs__{name}", "input": arguments}}

    return {
        "conversations": [
            {
                "name": "planning",
                "match": "TACX-STAGE: planning",
                "turns": [
                    {
                        "text": "Asking the docs server.",
                        "tool_calls": [call("whoami"), call("read_file", path=".tac/workflow.yaml"), call("read_file", path=outside), call("fetch", url=unlisted_url)],
                        "usage": USAGE,
                    },
                    {"tool_calls": [{"write": {"path": "plan.md", "content": "# Plan\n\nWhat the docs server said.\n"}}], "usage": USAGE},
                    {"text": "Planned.", "usage": USAGE},
                ],
            },
            {
                "name": "building",
                "match": "TACX-STAGE: building",
                "turns": [
                    {"tool_calls": [{"bash": "env; ls -a ~ ~/.claude 2>&1; echo built > built.txt"}], "usage": USAGE},
                    {"text": "Built.", "usage": USAGE},
                ],
            },
        ]
    }


def test_claude_calls_a_declared_stdio_server_inside_its_sandbox_and_the_answer_reaches_the_transcript(
    local_repository, origin_and_clone, tmp_path, start_model_server, monkeypatch, unlisted_host
):
    _, clone = origin_and_clone
    secret = f"mcp-canary-{os.urandom(8).hex()}"  # no secret-looking name or shape: redacted as the attempt's
    monkeypatch.setenv("MCP_DOCS_ACCESS", secret)
    outside = tmp_path / "outside.txt"
    outside.write_text("OUTSIDE-THE-WORKTREE")
    unlisted_url = f"http://127.0.0.1:{unlisted_host.server_port}/"
    server = start_model_server(script(str(outside), unlisted_url))
    point_claude_at(monkeypatch, server)
    commit_workflow(
        clone,
        f"""
publish: none
stages:
  - name: planning
    mcp:
      docs:
        command: {json.dumps(sys.executable)}
        args: [{json.dumps(SERVER)}]
        env:
          DOCS_TOKEN: {{secret: MCP_DOCS_ACCESS}}
          DOCS_MODE: plain
  - name: building
""",
    )
    task, _ = services.task_create(repository=local_repository, issue_number=27, title="Use the docs", body="Ask the docs server.", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    task = jobs.task_run_inline(task=task)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason

    planning = StageResult.objects.get(task=task, stage__name="planning", success=True)
    events = list(AgentEvent.objects.filter(result=planning).order_by("seq"))
    init = next(e.data for e in events if e.kind == "system" and e.data.get("subtype") == "init")
    assert [s["name"] for s in init["mcp_servers"]] == ["docs"]  # the declared server, and only it
    calls = [e.data for e in events if e.kind == "tool_call" and e.data.get("server")]
    assert [(c["server"], c["tool"]) for c in calls] == [("docs", "whoami"), ("docs", "read_file"), ("docs", "read_file"), ("docs", "fetch")]
    results = {e.data["id"]: e.data for e in events if e.kind == "tool_result"}
    answers = [results[c["id"]]["output"] for c in calls]
    # The server ran with the plain setting and the secret, and the secret is not on the record.
    assert "DOCS-OK DOCS_TOKEN=[REDACTED] DOCS_MODE=plain" in answers[0]
    # (claude shows the tool's structured result: {"result": "..."})
    assert "READ-OK" in answers[1] and "mcp:" in answers[1]  # its own worktree
    assert "READ-FAILED" in answers[2]  # a file outside the worktree: not in the sandbox's view
    assert "FETCH-FAILED" in answers[3]
    assert unlisted_host.hits == 0
    assert not any(r["is_error"] for r in results.values())  # granted: no call was refused for want of a prompt

    # The task page shows the call with its server.
    call_event = next(e for e in events if e.kind == "tool_call" and e.data.get("tool") == "whoami")
    html = render_to_string("dashboard/partials/event.html", {"event": call_event})
    assert "MCP tool call" in html and '<span class="mcp-server" title="MCP server">docs</span> › <strong class="tool-name" title="mcp__docs__whoami">whoami</strong>' in html
    assert event_summary("tool_call", call_event.data) == "docs › whoami"

    recorded = "\n".join(json.dumps(e.data) for e in AgentEvent.objects.filter(task=task))
    assert secret not in recorded
    assert "OUTSIDE-THE-WORKTREE" not in recorded and "UNLISTED-HOST-ANSWER" not in recorded
    # The building stage names no server: neither the secret nor a configuration reached it.
    building = StageResult.objects.get(task=task, stage__name="building", success=True)
    env_output = next(e.data["output"] for e in AgentEvent.objects.filter(result=building, kind="tool_result"))
    assert "DOCS_TOKEN" not in env_output and "MCP_DOCS_ACCESS" not in env_output
    assert "tacx-mcp.json" not in env_output
    assert not AgentEvent.objects.filter(result=building, kind="tool_call", data__has_key="server").exists()


@pytest.fixture
def http_server(tmp_path):
    """tests/agents/mcp_docs.py over streamable HTTP on a loopback port, outside any sandbox,
    answering only requests that carry the expected Authorization header."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    token = f"http-canary-{os.urandom(8).hex()}"
    proc = subprocess.Popen([sys.executable, SERVER, "--http", str(port), f"Bearer {token}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        wait_for(lambda: _listening(port), "the MCP HTTP server", timeout=30)
        yield port, token
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_claude_reaches_an_allowed_streamable_http_server_with_a_secret_header(local_repository, origin_and_clone, start_model_server, monkeypatch, http_server):
    port, token = http_server
    _, clone = origin_and_clone
    monkeypatch.setenv("MCP_REMOTE_ACCESS", token)
    server = start_model_server(
        {
            "conversations": [
                {
                    "name": "planning",
                    "match": "TACX-STAGE: planning",
                    "turns": [
                        {"tool_calls": [{"tool": {"name": "mcp__remote__whoami", "input": {}}}], "usage": USAGE},
                        {"tool_calls": [{"write": {"path": "plan.md", "content": "# Plan\n"}}], "usage": USAGE},
                        {"text": "Planned.", "usage": USAGE},
                    ],
                }
            ]
        }
    )
    point_claude_at(monkeypatch, server)
    commit_workflow(
        clone,
        f"""
publish: none
network: {{allow: ["127.0.0.1:{port}"]}}
mcp:
  remote:
    url: http://127.0.0.1:{port}/mcp
    headers: {{Authorization: {{secret: MCP_REMOTE_ACCESS, prefix: "Bearer "}}}}
stages:
  - name: planning
""",
    )
    task, _ = services.task_create(repository=local_repository, issue_number=28, title="Ask remote", body="Ask.", trigger_source="cli")
    services.task_dispatch(task=task, enqueue=False)
    task = jobs.task_run_inline(task=task)
    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    events = list(AgentEvent.objects.filter(task=task).order_by("seq"))
    (call,) = [e.data for e in events if e.kind == "tool_call" and e.data.get("server") == "remote"]
    (answer,) = [e.data for e in events if e.kind == "tool_result" and e.data["id"] == call["id"]]
    # The server (outside the sandbox, where DOCS_TOKEN is unset) answered: the header got through.
    assert "DOCS-OK DOCS_TOKEN=<unset>" in answer["output"] and not answer["is_error"], answer
    assert token not in "\n".join(json.dumps(e.data) for e in events)
