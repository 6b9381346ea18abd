"""MCP servers with the real codex, gemini, qwen and opencode CLIs against the scripted model
server (issue 27, section 2; the claude counterpart is tests/test_mcp_claude.py).

One planning stage per CLI declares the stdio server tests/agents/mcp_docs.py, with a plain
setting and a secret, and the same tools over streamable HTTP on an allowed loopback port behind
an Authorization header built from a second secret. The scripted model calls three tools by the
name the CLI offered them under (codex: the function `whoami` of namespace `mcp__docs`; gemini:
`mcp_docs_whoami`; qwen: `mcp__docs__whoami`; opencode: `docs_whoami`), then writes the plan
with the CLI's own file tool. The CLI spawns the stdio server inside the attempt's sandbox and
runs the calls without a prompt; the transcript shows them as tool calls of servers `docs` and
`remote` with the servers' answers, the secrets redacted, the file outside the worktree unread.
(About 75 s for the four.)

codex gets its servers as `required`, so it waits for them before its first request (an optional
server gets a second's grace, then its tools are silently left out) and a server that cannot
start ends the run at once with a sentence naming it (a few seconds).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness.cli_runs import DUMMY_API_KEY
from harness.modelserver import ScriptedModelServer
from pipeline.lib.mcp import ResolvedServer
from pipeline.models import AgentEvent, StageResult, Task
from pipeline.providers import get_provider
from pipeline.providers.base import Invocation, agent_environment
from tests.conftest import ROOT, commit_workflow
from tests.test_mcp_claude import http_server  # noqa: F401 - the fixture
from tests.test_pipeline_claude import run
from tests.test_pipeline_gemini_qwen_opencode import MODELS, model_server  # noqa: F401 - the fixture

pytestmark = [pytest.mark.cli, pytest.mark.django_db(transaction=True)]

SERVER = str(ROOT / "tests" / "agents" / "mcp_docs.py")
USAGE = {"input_tokens": 500, "output_tokens": 20}
# How each CLI names the tool `<tool>` of server `docs` to the model.
TOOL_NAMES = {"codex": "mcp__{}__{}", "gemini": "mcp_{}_{}", "qwen": "mcp__{}__{}", "opencode": "{}_{}"}


def script(provider: str, outside: str) -> dict:
    def call(server: str, tool: str, **arguments) -> dict:
        return {"tool": {"name": TOOL_NAMES[provider].format(server, tool), "input": arguments}}

    return {
        "conversations": [
            {
                "name": "planning",
                "match": "TACX-STAGE: planning",
                "turns": [
                    {
                        "text": "Asking the docs server.",
                        "tool_calls": [call("docs", "whoami"), call("docs", "read_file", path=outside), call("remote", "whoami")],
                        "usage": USAGE,
                    },
                    {
                        "tool_calls": [{"write": {"path": "plan.md", "content": "# Plan\n\nWhat the docs server said.\n"}}],
                        "usage": USAGE,
                    },
                    {"text": "Planned.", "usage": USAGE},
                ],
            }
        ]
    }


def stage(provider: str, server_url: str) -> str:
    options = f'    options: {{base_url: "{server_url}/v1", sandbox: danger-full-access}}\n' if provider == "codex" else ""
    model = "gpt-5" if provider == "codex" else MODELS[provider]
    return f"  - name: planning\n    provider: {provider}\n    model: {model}\n    timeout: 120\n{options}"


@pytest.mark.parametrize("provider", sorted(TOOL_NAMES))
def test_the_model_calls_a_declared_stdio_server_through_each_cli_inside_its_sandbox(
    provider,
    local_repository,
    origin_and_clone,
    tmp_path,
    model_server,  # noqa: F811
    monkeypatch,
    http_server,  # noqa: F811 - the fixtures
):
    _, clone = origin_and_clone
    port, token = http_server
    monkeypatch.setenv("MCP_REMOTE_ACCESS", token)
    secret = f"mcp-canary-{os.urandom(8).hex()}"
    monkeypatch.setenv("MCP_DOCS_ACCESS", secret)
    outside = tmp_path / "outside.txt"
    outside.write_text("OUTSIDE-THE-WORKTREE")
    server = model_server(script(provider, str(outside)))
    commit_workflow(
        clone,
        f'publish: none\nnetwork: {{allow: ["127.0.0.1:{port}"]}}\nstages:\n'
        + stage(provider, server.url)
        + f"""    mcp:
      docs:
        command: {json.dumps(sys.executable)}
        args: [{json.dumps(SERVER)}]
        env:
          DOCS_TOKEN: {{secret: MCP_DOCS_ACCESS}}
          DOCS_MODE: plain
      remote:
        url: http://127.0.0.1:{port}/mcp
        headers: {{Authorization: {{secret: MCP_REMOTE_ACCESS, prefix: "Bearer "}}}}
""",
    )

    task = run(local_repository, title="Use the docs", body="Ask the docs server.")

    assert task.status == Task.Status.SUCCEEDED, task.status_reason
    planning = StageResult.objects.get(task=task, stage__name="planning", success=True)
    events = list(AgentEvent.objects.filter(result=planning).order_by("seq"))
    calls = [e.data for e in events if e.kind == "tool_call" and e.data.get("server")]
    assert [(c["server"], c["tool"]) for c in calls] == [("docs", "whoami"), ("docs", "read_file"), ("remote", "whoami")], [
        e.data for e in events if e.kind == "tool_call"
    ]
    results = {e.data["id"]: e.data for e in events if e.kind == "tool_result"}
    whoami, read, remote = (results[c["id"]] for c in calls)
    # The CLI spawned the server with the plain setting and the secret; the secret is not on the record.
    assert "DOCS-OK DOCS_TOKEN=[REDACTED] DOCS_MODE=plain" in whoami["output"], whoami
    assert "READ-FAILED" in read["output"], read  # outside the worktree: not in the sandbox's view
    # The HTTP server (outside the sandbox, where DOCS_TOKEN is unset) answered: the header got through.
    assert "DOCS-OK DOCS_TOKEN=<unset>" in remote["output"], remote
    assert not whoami["is_error"] and not read["is_error"] and not remote["is_error"]
    recorded = "\n".join(json.dumps(e.data) for e in AgentEvent.objects.filter(task=task))
    assert secret not in recorded and token not in recorded and "OUTSIDE-THE-WORKTREE" not in recorded
    # The scripted conversation was played to its end: nothing was refused or skipped.
    assert not [r for r in server.requests if r["overrun"]]


@pytest.mark.django_db(transaction=False)
def test_codex_ends_at_once_naming_a_declared_server_that_cannot_start(tmp_path, monkeypatch):
    work, home = tmp_path / "w", tmp_path / "attempt-home"
    work.mkdir()
    home.mkdir()
    monkeypatch.setenv("TACX_MODEL_API_KEY", DUMMY_API_KEY)
    codex = get_provider("codex")
    broken = ResolvedServer(name="docs", transport="stdio", command=sys.executable, args=("-c", "raise SystemExit(3)"))
    with ScriptedModelServer({"conversations": [{"name": "any", "turns": [{"text": "Done."}]}]}) as server:
        options = {"base_url": f"{server.url}/v1", "sandbox": "danger-full-access"}
        inv = Invocation(prompt="p", cwd=str(work), model="gpt-5", options=options, mcp_servers=(broken,), home=str(home))
        env = {**agent_environment(codex, inv), "HOME": str(home)}
        codex.prepare_home(str(home), inv, env)
        done = subprocess.run(
            codex.build_command(inv), cwd=work, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120
        )
        parser = codex.parser(inv)
        for line in done.stdout.splitlines():
            parser.feed(line)
        outcome = parser.finish(exit_code=done.returncode, stderr_tail=done.stderr[-4000:])
        assert not [r for r in server.requests if not r["auxiliary"]]  # no model request was made without the server
    assert not outcome.success
    assert outcome.error.startswith("codex could not start the stage's MCP servers: docs: "), outcome.error
