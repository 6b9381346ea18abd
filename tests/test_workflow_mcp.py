"""The workflow key `mcp:` (issue 27, section 2): servers at the workflow level and per stage,
their validation (where and what is wrong), the egress allow-list for HTTP servers, providers
without MCP support, the snapshot (secret names, never values), and the secrets read per attempt."""

from __future__ import annotations

import pytest

from pipeline import publish_guard
from pipeline.lib import mcp as mcp_
from pipeline.lib import redaction
from pipeline.models import Task
from pipeline.workflow import Workflow, WorkflowError, load_workflow_text

STDIO = "docs: {command: python3, args: [tools/docs.py], env: {DOCS_TOKEN: {secret: DOCS_ACCESS}, MODE: fast}}"


def refusal(text: str) -> list[str]:
    with pytest.raises(WorkflowError) as caught:
        load_workflow_text(text)
    return caught.value.errors


def names(workflow: Workflow) -> dict[str, list[str]]:
    return {s.name: [m.name for m in workflow.mcp_servers(s)] for s in workflow.stages}


def test_workflow_servers_reach_every_agent_stage_and_a_stage_adds_replaces_or_turns_them_off():
    workflow = load_workflow_text(
        f"""
network: {{allow: [mcp.example.com]}}
mcp:
  {STDIO}
  search: {{url: "https://mcp.example.com/mcp", headers: {{Authorization: {{secret: SEARCH_TOKEN, prefix: "Bearer "}}}}}}
stages:
  - name: planning
    mcp: {{search: false}}
  - name: building
    mcp: {{docs: {{command: node, args: [other.js]}}, lint: {{command: ruff-mcp}}}}
  - name: reviewing
    mcp: false
  - name: pr_creation
"""
    )
    assert names(workflow) == {"planning": ["docs"], "building": ["search", "docs", "lint"], "reviewing": [], "pr_creation": []}
    building = workflow.mcp_servers(workflow.stage("building"))
    assert building[1].command == "node"  # the stage's own replaces the workflow's of that name
    docs = workflow.mcp_servers(workflow.stage("planning"))[0]
    assert docs.transport == "stdio" and docs.args == ("tools/docs.py",) and docs.secrets == ("DOCS_ACCESS",)
    search = workflow.mcp_servers(workflow.stage("building"))[0]
    assert search.transport == "http" and search.secrets == ("SEARCH_TOKEN",)
    # The snapshot names the secrets, never a value, and comes back the same.
    snapshot = workflow.to_json()
    assert snapshot["mcp"]["docs"]["env"] == {"DOCS_TOKEN": {"secret": "DOCS_ACCESS"}, "MODE": "fast"}
    assert snapshot["stages"][0]["mcp"] == {"search": False} and snapshot["stages"][2]["mcp"] is False
    again = Workflow.from_json(snapshot)
    assert names(again) == names(workflow) and again.fingerprint() == workflow.fingerprint()


def test_a_workflow_without_mcp_keeps_its_snapshot_and_fingerprint_shape():
    snapshot = load_workflow_text(None).to_json()
    assert "mcp" not in snapshot and not any("mcp" in s for s in snapshot["stages"])


def test_an_http_server_on_a_host_the_stage_does_not_allow_is_refused_with_the_fix():
    errors = refusal('mcp:\n  search: {url: "https://mcp.evil.example/mcp"}\nstages:\n  - {name: planning, provider: claude}\n  - name: pr_creation\n')
    assert errors == [
        ".tac/workflow.yaml: mcp.search.url: mcp.evil.example:443 is not on the egress allow-list of stage planning, so its sandbox "
        "would refuse the connection; add mcp.evil.example:443 to network.allow (or to that stage's network.allow)"
    ]
    # Declared in a stage: the error points there; another port of an allowed host is not allowed.
    errors = refusal(
        "network: {allow: ['mcp.example.com:8443']}\nstages:\n  - name: planning\n    provider: claude\n"
        "    mcp: {search: {url: 'https://mcp.example.com/mcp'}}\n  - name: pr_creation\n"
    )
    assert errors == [
        ".tac/workflow.yaml: stages[0] (planning).mcp.search.url: mcp.example.com:443 is not on the egress allow-list of stage "
        "planning, so its sandbox would refuse the connection; add mcp.example.com:443 to network.allow (or to that stage's network.allow)"
    ]


@pytest.mark.parametrize(
    "network",
    ["network: {allow: [mcp.example.com]}", "network: {allow: ['mcp.example.com:443']}", "network: {allow: ['*.example.com']}", "stage"],
)
def test_an_http_server_on_an_allowed_host_is_accepted(network):
    stage_network = "    network: {allow: [mcp.example.com]}\n" if network == "stage" else ""
    top = "" if network == "stage" else network + "\n"
    workflow = load_workflow_text(
        f"{top}mcp:\n  search: {{url: 'https://mcp.example.com/mcp'}}\nstages:\n  - name: planning\n    provider: claude\n{stage_network}  - name: pr_creation\n"
    )
    assert names(workflow)["planning"] == ["search"]


def test_a_provider_without_mcp_support_refuses_a_stage_with_servers_on_load():
    errors = refusal(
        "stages:\n  - name: planning\n    provider: command\n    options: {argv: [make, plan]}\n"
        f"    mcp:\n      {STDIO}\n  - name: pr_creation\n"
    )
    assert errors == [
        ".tac/workflow.yaml: stages[0] (planning).mcp: the command provider has no MCP support, so it cannot use the MCP servers docs "
        "(MCP works with: claude, codex, gemini, qwen, opencode)"
    ]
    # Inherited from the workflow: the error says how to turn them off, and that works.
    text = f"mcp:\n  {STDIO}\nstages:\n  - name: planning\n    provider: command\n    options: {{argv: [make, plan]}}\nSTAGE_MCP  - name: pr_creation\n"
    assert "turn the workflow's off for this stage with `mcp: false`" in refusal(text.replace("STAGE_MCP", ""))[0]
    assert names(load_workflow_text(text.replace("STAGE_MCP", "    mcp: false\n")))["planning"] == []


@pytest.mark.parametrize(
    "servers, where, problem",
    [
        ("{my_server: {command: x}}", "mcp.my_server", "a server name must be letters, digits and -"),
        ("{docs: {command: x, url: 'http://a'}}", "mcp.docs", "has both command (stdio) and url"),
        ("{docs: {args: [x]}}", "mcp.docs", "needs command (a stdio server) or url"),
        ("{docs: {url: 'ftp://a/b'}}", "mcp.docs.url", "must be an http:// or https:// URL"),
        ("{docs: {url: 'https://user:pw@a/b'}}", "mcp.docs.url", "carry no user or password"),
        ("{docs: {command: x, env: {T: {secret: GITHUB_TOKEN}}}}", "mcp.docs.env.T.secret", "GITHUB_TOKEN is TAC-X's own credential"),
        ("{docs: {command: x, env: {T: {secret: TACX_MODEL_API_KEY}}}}", "mcp.docs.env.T.secret", "is TAC-X's own credential"),
        ("{docs: {command: x, env: {T: {secret: 'not a name'}}}}", "mcp.docs.env.T.secret", "must name one of TAC-X's environment variables"),
        ("{docs: {command: x, env: {T: {secret: A, value: b}}}}", "mcp.docs.env.T.value", "unknown key for a secret"),
        ("{docs: {command: x, env: {1BAD: y}}}", "mcp.docs.env.1BAD", "must be an environment variable name"),
        ("{docs: {command: x, args: 'a b'}}", "mcp.docs.args", "must be a list of strings"),
        ("{docs: {command: x, cwd: /tmp}}", "mcp.docs.cwd", "unknown key for a stdio server (allowed: args, command, env)"),
        ("{docs: {url: 'https://a/b', headers: {'Bad Header': x}}}", "mcp.docs.headers.Bad Header", "must be an HTTP header name"),
        ("[docs]", "mcp", "must be a mapping of server name to"),
    ],
)
def test_a_bad_server_is_refused_saying_where_and_what(servers, where, problem):
    (error,) = refusal(f"mcp: {servers}\n")
    assert error.startswith(f".tac/workflow.yaml: {where}: "), error
    assert problem in error


def test_pr_creation_uses_no_mcp_servers():
    (error,) = refusal("stages:\n  - {name: planning, provider: claude}\n  - {name: pr_creation, mcp: {docs: {command: x}}}\n")
    assert error == ".tac/workflow.yaml: stages[1] (pr_creation).mcp: pr_creation is done by TAC-X, not an agent: it uses no MCP servers"


def test_secrets_are_read_from_tac_x_s_environment_per_attempt_and_a_missing_one_is_named():
    (docs,) = load_workflow_text(f"mcp:\n  {STDIO}\n").mcp
    resolved, values = mcp_.resolve((docs,), {"DOCS_ACCESS": "s3cret-value-42"})
    assert resolved[0].env == (("DOCS_TOKEN", "s3cret-value-42"), ("MODE", "fast")) and values == ("s3cret-value-42",)
    with pytest.raises(mcp_.SecretMissing, match="MCP server 'docs' needs the secret DOCS_ACCESS, which is not set in TAC-X's environment"):
        mcp_.resolve((docs,), {})


def test_an_attempt_s_secrets_are_redacted_while_it_runs_and_only_then():
    value = "plain-looking-value-7"
    with redaction.attempt_secrets():
        redaction.attempt_secrets_add([value, "short"])
        assert redaction.redact(f"token={value}") == "token=[REDACTED]"
        assert redaction.redact("a short word") == "a short word"  # under 8 characters: not redacted
    assert redaction.redact(f"token={value}") == f"token={value}"


@pytest.mark.django_db
def test_the_publish_guard_knows_the_secrets_a_task_s_workflow_hands_its_mcp_servers(monkeypatch, local_repository):
    value = "plain-looking-docs-access-0042"  # a name and a shape no other rule takes for a secret
    monkeypatch.setenv("DOCS_ACCESS", value)
    workflow = load_workflow_text(f"stages:\n  - name: planning\n    provider: claude\n    mcp:\n      {STDIO}\n  - name: pr_creation\n")
    task = Task.objects.create(repository=local_repository, issue_number=5, title="t", workflow=workflow.to_json())
    assert publish_guard.task_secret_names(task) == ("DOCS_ACCESS",)
    with pytest.raises(publish_guard.PublishBlocked) as blocked:
        publish_guard.check_text(f"notes: {value}", "the pull request body", task=task)
    assert str(blocked.value) == "the pull request body contains the value of DOCS_ACCESS; it was not published"
    publish_guard.check_text(f"notes: {value}", "the pull request body")  # without the task: not a secret it knows
