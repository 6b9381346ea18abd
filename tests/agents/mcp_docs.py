"""A real MCP server (the `mcp` SDK from PyPI, stdio transport) for the MCP tests: the agent CLI
spawns it from the workflow's `mcp:` declaration, inside the attempt's sandbox.

Its tools report what the server itself can see: the environment it was given (`whoami`), a
file by path (`read_file`), and a URL (`fetch`). Each answers a line starting with OK or FAILED
so a test can tell what happened without the server raising.

`mcp_docs.py --http PORT AUTHORIZATION` serves the same tools over streamable HTTP on loopback
instead, answering 401 to any request whose Authorization header is not AUTHORIZATION.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

from mcp.server.mcpserver import MCPServer

server = MCPServer("docs")


@server.tool()
def whoami() -> str:
    """The server's settings and secret as it received them."""
    return f"DOCS-OK DOCS_TOKEN={os.environ.get('DOCS_TOKEN', '<unset>')} DOCS_MODE={os.environ.get('DOCS_MODE', '<unset>')} cwd={os.getcwd()}"


@server.tool()
def read_file(path: str) -> str:
    """The first 200 characters of a file, or why it cannot be read."""
    try:
        return "READ-OK " + Path(path).read_text()[:200]
    except OSError as exc:
        return f"READ-FAILED {type(exc).__name__}"


@server.tool()
def fetch(url: str) -> str:
    """The body of a URL, or why it cannot be fetched."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - a test server
            return "FETCH-OK " + response.read().decode()[:200]
    except Exception as exc:  # noqa: BLE001 - the answer says what went wrong
        return f"FETCH-FAILED {type(exc).__name__}"


def serve_http(port: int, authorization: str) -> None:
    import uvicorn  # the SDK's own dependency, like Starlette

    app = server.streamable_http_app()

    async def guarded(scope, receive, send):
        headers = dict(scope.get("headers") or [])
        if scope["type"] == "http" and headers.get(b"authorization", b"").decode() != authorization:
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await app(scope, receive, send)

    uvicorn.run(guarded, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--http"]:
        serve_http(int(sys.argv[2]), sys.argv[3])
    else:
        server.run("stdio")
