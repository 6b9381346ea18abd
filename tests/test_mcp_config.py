"""Each CLI's configuration of a stage's MCP servers, as the providers write it into the
attempt's private HOME (claude, codex, gemini, qwen, opencode), read back by the real CLIs'
own `mcp list` (which connect to a real stdio server), and the server named on the tool calls
of each CLI's stream."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import tomllib

import pytest

from harness.cli_runs import BIN_DIR
from pipeline.lib.mcp import ResolvedServer
from pipeline.providers import PROVIDERS, get_provider
from pipeline.providers.base import Invocation, ProviderError, agent_environment
from pipeline.providers.claude import ClaudeStreamParser
from pipeline.providers.codex import CodexStreamParser
from pipeline.providers.gemini import GeminiStreamParser
from pipeline.providers.opencode import OpencodeStreamParser
from pipeline.providers.qwen import QwenStreamParser
from pipeline.workflow import MCP_PROVIDERS
from tests.conftest import ROOT

SERVER = str(ROOT / "tests" / "agents" / "mcp_docs.py")
DOCS = ResolvedServer(name="docs", transport="stdio", command=sys.executable, args=(SERVER,), env=(("DOCS_TOKEN", "t0ken-value-1"), ("DOCS_MODE", "plain")))
REMOTE = ResolvedServer(name="remote", transport="http", url="http://127.0.0.1:9/mcp", headers=(("Authorization", "Bearer h3ader-value"),))


def inv(home, *servers: ResolvedServer, **kw) -> Invocation:
    return Invocation(prompt="p", cwd="/w", mcp_servers=servers or (DOCS, REMOTE), home=str(home), **kw)


def private(path) -> bool:
    return stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_the_providers_that_support_mcp_are_the_ones_the_workflow_accepts():
    assert sorted(name for name, cls in PROVIDERS.items() if cls.supports_mcp) == sorted(MCP_PROVIDERS)
    assert not PROVIDERS["command"].supports_mcp


def test_claude_gets_only_the_stage_s_servers_and_exactly_their_tools(tmp_path):
    provider = get_provider("claude")
    invocation = inv(tmp_path, allowed_tools=("Read", "Bash"))
    provider.prepare_home(str(tmp_path), invocation, {})
    config = tmp_path / ".claude" / "tacx-mcp.json"
    assert json.loads(config.read_text()) == {
        "mcpServers": {
            "docs": {"type": "stdio", "command": sys.executable, "args": [SERVER], "env": {"DOCS_TOKEN": "t0ken-value-1", "DOCS_MODE": "plain"}},
            "remote": {"type": "http", "url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": "Bearer h3ader-value"}},
        }
    }
    assert private(config)
    argv = provider.build_command(invocation)
    i = argv.index("--mcp-config")
    assert argv[i + 1 : i + 3] == [str(config), "--strict-mcp-config"]
    j = argv.index("--allowedTools")
    assert argv[j + 1 : argv.index("--", j)] == ["Read", "Bash", "mcp__docs", "mcp__remote"]
    assert agent_environment(provider, invocation, {"PATH": "/bin"})["MCP_CONNECTION_NONBLOCKING"] == "false"
    # Without servers: no MCP flags, no file, no extra tools (today's argv).
    plain = provider.build_command(Invocation(prompt="p", cwd="/w", allowed_tools=("Read",)))
    assert "--mcp-config" not in plain and "--strict-mcp-config" not in plain and "mcp__" not in " ".join(plain)


def test_a_value_the_cli_would_expand_is_refused_not_changed(tmp_path):
    dollar = ResolvedServer(name="docs", transport="stdio", command="x", env=(("TOKEN", "abc${HOME}def"),))
    with pytest.raises(ProviderError, match=r"MCP server 'docs': the value of TOKEN contains '\$\{'") as caught:
        get_provider("claude").prepare_home(str(tmp_path), inv(tmp_path, dollar), {})
    assert caught.value.permanent
    for name in ("gemini", "qwen"):
        with pytest.raises(ProviderError, match=r"contains '\$'"):
            get_provider(name).prepare_home(str(tmp_path), inv(tmp_path, dollar), {})


def test_codex_config_toml_carries_the_stage_s_servers_in_place_of_the_operator_s(tmp_path, monkeypatch):
    operator = tmp_path / "operator-codex"
    operator.mkdir()
    (operator / "config.toml").write_text('model = "gpt-5"\n[mcp_servers.theirs]\ncommand = "evil"\n[profiles.fast]\nmodel_reasoning_effort = "low"\n')
    home = tmp_path / "attempt-home"
    home.mkdir()
    env = {"CODEX_HOME": str(operator)}
    get_provider("codex").prepare_home(str(home), inv(home), env)
    path = home / ".codex" / "config.toml"
    config = tomllib.loads(path.read_text())
    assert config == {
        "model": "gpt-5",
        "profiles": {"fast": {"model_reasoning_effort": "low"}},
        "mcp_servers": {
            # required: codex waits for the server before the first request (an optional one gets
            # a second's grace, then its tools are left out) and fails if it cannot start
            "docs": {"command": sys.executable, "args": [SERVER], "env": {"DOCS_TOKEN": "t0ken-value-1", "DOCS_MODE": "plain"}, "required": True},
            "remote": {"url": "http://127.0.0.1:9/mcp", "http_headers": {"Authorization": "Bearer h3ader-value"}, "required": True},
        },
    }
    assert private(path) and env["CODEX_HOME"] == str(home / ".codex")
    assert "theirs" not in (operator / "config.toml").read_text().split("mcp_servers")[0]  # the operator's file is untouched
    assert "evil" in (operator / "config.toml").read_text()


@pytest.mark.parametrize("name, folder, http", [("gemini", ".gemini", {"url": "http://127.0.0.1:9/mcp", "type": "http"}), ("qwen", ".qwen", {"httpUrl": "http://127.0.0.1:9/mcp"})])
def test_gemini_and_qwen_settings_carry_mcp_servers_trusted_and_only_those_connect(tmp_path, name, folder, http):
    provider = get_provider(name)
    invocation = inv(tmp_path)
    provider.prepare_home(str(tmp_path), invocation, {})
    path = tmp_path / folder / "settings.json"
    assert json.loads(path.read_text())["mcpServers"] == {
        "docs": {"command": sys.executable, "args": [SERVER], "env": {"DOCS_TOKEN": "t0ken-value-1", "DOCS_MODE": "plain"}, "trust": True},
        "remote": {**http, "headers": {"Authorization": "Bearer h3ader-value"}, "trust": True},
    }
    assert private(path)
    argv = provider.build_command(invocation)
    assert argv[argv.index("--allowed-mcp-server-names") + 1] == "docs,remote"


def test_opencode_config_in_the_private_home_carries_the_mcp_servers(tmp_path):
    get_provider("opencode").prepare_home(str(tmp_path), inv(tmp_path), {})
    path = tmp_path / ".config" / "opencode" / "opencode.json"
    assert json.loads(path.read_text())["mcp"] == {
        "docs": {"type": "local", "command": [sys.executable, SERVER], "environment": {"DOCS_TOKEN": "t0ken-value-1", "DOCS_MODE": "plain"}, "enabled": True},
        "remote": {"type": "remote", "url": "http://127.0.0.1:9/mcp", "headers": {"Authorization": "Bearer h3ader-value"}, "enabled": True},
    }
    assert private(path)


LIST = {
    "codex": ["codex", "mcp", "list"],
    "gemini": ["gemini", "mcp", "list"],
    "qwen": ["qwen", "mcp", "list"],
    "opencode": ["opencode", "mcp", "list"],
}


@pytest.mark.cli
@pytest.mark.parametrize("name", sorted(LIST))
def test_the_real_cli_reads_the_configuration_and_connects_to_the_stdio_server(tmp_path, name):
    """What each CLI itself makes of the file TAC-X wrote: its own `mcp list` (gemini, qwen and
    opencode connect to the real stdio server to say so; codex lists what it parsed)."""
    binary = BIN_DIR / LIST[name][0]
    if not binary.exists():
        pytest.skip(f"{binary.name} is not installed in node_modules")
    home = tmp_path / "attempt-home"
    home.mkdir()
    env = {"PATH": f"{BIN_DIR}:{os.environ['PATH']}", "HOME": str(home), "TMPDIR": str(tmp_path), "NO_COLOR": "1", "LANG": "C.UTF-8"}
    provider = get_provider(name)
    # (opencode spends ~8 s failing over to SSE on an HTTP server that is not there: its remote
    # entry is checked by the file test above)
    invocation = inv(home, DOCS) if name == "opencode" else inv(home)
    env.update(provider.environment(invocation))
    env.pop("OPENCODE_CONFIG_CONTENT", None)
    provider.prepare_home(str(home), invocation, env)
    proc = subprocess.run([str(binary), *LIST[name][1:]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    out = proc.stdout + proc.stderr
    lines = {line for line in out.splitlines() if "docs" in line or "remote" in line}
    assert any("docs" in line for line in lines), out
    if name != "opencode":
        assert any("remote" in line and "127.0.0.1:9/mcp" in line for line in out.splitlines()), out
    if name == "codex":
        assert any(SERVER in line and "DOCS_TOKEN=*****" in line for line in lines), out
    else:
        docs = out.lower().split("docs", 1)[1].split("remote")[0]  # what the CLI says of the stdio server
        assert "connected" in docs and "disconnected" not in docs and "failed" not in docs, out


def test_tool_calls_of_a_declared_server_name_it_in_each_cli_s_stream():
    """The server and the tool on the tool_call event, from each CLI's own naming; a tool of no
    declared server (or a look-alike name) gets none."""
    servers = (DOCS, ResolvedServer(name="docs-v2", transport="stdio", command="x"))
    invocation = Invocation(prompt="p", cwd="/w", mcp_servers=servers)

    parsers = {"claude": ClaudeStreamParser, "qwen": QwenStreamParser, "gemini": GeminiStreamParser, "codex": CodexStreamParser, "opencode": OpencodeStreamParser}

    def calls(provider: str, *lines: dict) -> list[dict]:
        parser = parsers[provider](invocation)  # (not provider.parser(): that asks each CLI its version)
        return [e.data for line in lines for e in parser.feed(json.dumps(line)) if e.kind == "tool_call"]

    def claude_use(name: str) -> dict:
        return {"type": "assistant", "message": {"id": "m", "content": [{"type": "tool_use", "id": name, "name": name, "input": {}}]}}

    found = calls("claude", claude_use("mcp__docs__whoami"), claude_use("mcp__docs-v2__fetch"), claude_use("mcp__other__x"), claude_use("Bash"))
    assert [(c.get("server"), c.get("tool")) for c in found] == [("docs", "whoami"), ("docs-v2", "fetch"), (None, None), (None, None)]
    assert [(c["server"], c["tool"]) for c in calls("qwen", claude_use("mcp__docs__whoami"))] == [("docs", "whoami")]
    gemini = calls("gemini", {"type": "tool_use", "tool_id": "1", "tool_name": "mcp_docs_read_file", "parameters": {"path": "x"}})
    assert (gemini[0]["server"], gemini[0]["tool"]) == ("docs", "read_file")
    codex = calls("codex", {"type": "item.started", "item": {"id": "i1", "type": "mcp_tool_call", "server": "docs", "tool": "whoami", "arguments": {}}})
    assert (codex[0]["name"], codex[0]["server"], codex[0]["tool"]) == ("docs.whoami", "docs", "whoami")
    opencode = calls("opencode", {"type": "tool_use", "part": {"callID": "c", "tool": "docs_whoami", "state": {"status": "completed", "input": {}, "output": "ok"}}})
    assert (opencode[0]["server"], opencode[0]["tool"]) == ("docs", "whoami")
    # No servers declared: a claude tool called mcp__… is shown as it is, with no server claimed.
    bare = ClaudeStreamParser(Invocation(prompt="p", cwd="/w"))
    assert "server" not in [e for e in bare.feed(json.dumps(claude_use("mcp__docs__whoami"))) if e.kind == "tool_call"][0].data
