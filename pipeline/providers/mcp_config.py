"""Each CLI's own configuration of a stage's MCP servers (`pipeline.lib.mcp`), written into the
attempt's private HOME by the provider's ``prepare_home``, and the server of an MCP tool call.

Formats (checked against the CLIs in package.json):

- claude 2.1: a file for ``--mcp-config`` with ``--strict-mcp-config`` (nothing else is loaded:
  no ``.mcp.json`` of the worktree, no user settings), ``{"mcpServers": {name: {"type": "stdio",
  command, args, env} | {"type": "http", url, headers}}}``; the tools are granted with
  ``--allowedTools mcp__<server>`` (every tool of that server, nothing else). Tool names are
  ``mcp__<server>__<tool>``. The CLI expands ``${VAR}`` in these values, so a value containing
  ``${`` is refused rather than changed.
- codex 0.169: ``[mcp_servers.<name>]`` in ``$CODEX_HOME/config.toml`` with ``command``,
  ``args``, ``env`` or ``url``, ``http_headers``; the operator's own ``mcp_servers`` are dropped.
  Its stream names the server itself (``mcp_tool_call`` items, ``server.tool``).
- gemini 0.61: ``mcpServers`` in ``~/.gemini/settings.json``, ``{command, args, env, trust}`` or
  ``{url, type: "http", headers, trust}`` (``trust``: no confirmation), and
  ``--allowed-mcp-server-names`` so a worktree's ``.gemini/settings.json`` adds none. Tool names
  are ``mcp_<server>_<tool>``. It expands ``$VAR`` in env and header values: a value with ``$`` is
  refused.
- qwen 0.24: as gemini, but streamable HTTP is ``httpUrl`` (``url`` alone is SSE), tool names
  ``mcp__<server>__<tool>``.
- opencode 1.18: ``mcp`` in ``~/.config/opencode/opencode.json``, ``{type: "local", command:
  [program, *args], environment, enabled}`` or ``{type: "remote", url, headers, enabled}``; tool
  names ``<server>_<tool>``.

Secrets reach these files (and so the attempt's sandbox, where the CLI spawns the servers) only
for the stages that name them; the recorder redacts their values from every event.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from typing import Any

from ..lib.mcp import HTTP, ResolvedServer

CLAUDE_CONFIG = ".claude/tacx-mcp.json"


class McpConfigError(ValueError):
    """A server cannot be written for this CLI as it is (the provider makes it a permanent
    ProviderError)."""


def _refuse(servers: Iterable[ResolvedServer], marker: str, cli: str) -> None:
    for s in servers:
        for key, value in (*s.env, *s.headers):
            if marker in value:
                raise McpConfigError(
                    f"MCP server {s.name!r}: the value of {key} contains {marker!r}, which {cli} would read as a "
                    "variable to expand; it cannot be passed unchanged"
                )


def claude_config(servers: Iterable[ResolvedServer]) -> dict:
    servers = tuple(servers)
    _refuse(servers, "${", "claude")
    out: dict[str, Any] = {}
    for s in servers:
        if s.transport == HTTP:
            out[s.name] = {"type": "http", "url": s.url, "headers": dict(s.headers)}
        else:
            out[s.name] = {"type": "stdio", "command": s.command, "args": list(s.args), "env": dict(s.env)}
    return {"mcpServers": out}


def claude_allowed_tools(servers: Iterable[ResolvedServer]) -> list[str]:
    """``mcp__<server>``: every tool of each declared server, and nothing else."""
    return [f"mcp__{s.name}" for s in servers]


def gemini_servers(servers: Iterable[ResolvedServer], *, http_key: str = "url") -> dict:
    """``mcpServers`` for gemini (``http_key="url"`` with ``type: "http"``) or qwen
    (``http_key="httpUrl"``)."""
    servers = tuple(servers)
    _refuse(servers, "$", "gemini" if http_key == "url" else "qwen")
    out: dict[str, Any] = {}
    for s in servers:
        if s.transport == HTTP:
            entry: dict[str, Any] = {http_key: s.url, "headers": dict(s.headers), "trust": True}
            if http_key == "url":
                entry["type"] = "http"
            out[s.name] = entry
        else:
            out[s.name] = {"command": s.command, "args": list(s.args), "env": dict(s.env), "trust": True}
    return out


def codex_servers(servers: Iterable[ResolvedServer]) -> dict:
    out: dict[str, Any] = {}
    for s in servers:
        if s.transport == HTTP:
            out[s.name] = {"url": s.url, "http_headers": dict(s.headers), "required": True}
        else:
            out[s.name] = {"command": s.command, "args": list(s.args), "env": dict(s.env), "required": True}
    return out


def opencode_mcp(servers: Iterable[ResolvedServer]) -> dict:
    out: dict[str, Any] = {}
    for s in servers:
        if s.transport == HTTP:
            out[s.name] = {"type": "remote", "url": s.url, "headers": dict(s.headers), "enabled": True}
        else:
            out[s.name] = {"type": "local", "command": [s.command, *s.args], "environment": dict(s.env), "enabled": True}
    return out


def write_json(path: str, data: Mapping) -> None:
    """``data`` as JSON at ``path`` (directories made), readable by its owner only: it may hold
    secrets."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)


def tool_server(name: str, servers: Iterable[str], prefix: str) -> tuple[str, str] | None:
    """(server, tool) of an MCP tool called ``name`` in a CLI that names MCP tools
    ``prefix.format(server=…) + tool`` (``mcp__{server}__`` for claude), given the stage's
    server names; None for a tool of no declared server. The longest server name wins (``a``
    and ``a-b`` both declared)."""
    for server in sorted(servers, key=len, reverse=True):
        head = prefix.format(server=server)
        if name.startswith(head) and len(name) > len(head):
            return server, name[len(head) :]
    return None


def mark_mcp_calls(events: Iterable[Any], servers: Iterable[ResolvedServer], prefix: str) -> None:
    """Give each ``tool_call`` event of a declared server ``server`` and ``tool`` keys."""
    names = [s.name for s in servers]
    if not names:
        return
    for event in events:
        if event.kind == "tool_call" and (found := tool_server(str(event.data.get("name", "")), names, prefix)):
            event.data["server"], event.data["tool"] = found
