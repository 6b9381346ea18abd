"""The argv, environment and parser of the claude and codex providers work with the real CLIs.

Each CLI from node_modules runs against a tiny loopback model server that answers every request
by echoing the last user text, so the test proves that the prompt arrives intact (shell
metacharacters, a leading dash) and that the real stream parses to a successful outcome.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipeline.providers import get_provider
from pipeline.providers.base import Invocation, ProviderError, agent_environment

pytestmark = [pytest.mark.cli, pytest.mark.slow]
PROMPT = "--help $(rm -rf /); `x` && ../../etc"


def _texts(content) -> list[str]:
    if isinstance(content, str):
        return [content]
    return [b["text"] for b in content or [] if isinstance(b, dict) and isinstance(b.get("text"), str)]


def _sse(event: dict) -> bytes:
    return f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode()


class EchoModel(BaseHTTPRequestHandler):
    """Anthropic Messages (``/v1/messages``) and OpenAI Responses (``/v1/responses``), streamed."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(404)
        self.end_headers()

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        if "/responses" in self.path:
            users = [t for m in body.get("input", []) if m.get("role") == "user" for t in _texts(m.get("content"))]
            text = json.dumps({"echo": users[-1] if users else ""})
            events = [
                {"type": "response.created", "response": {"id": "resp_1"}},
                {"type": "response.output_item.done", "output_index": 0, "item": {"type": "message", "role": "assistant", "id": "m1", "content": [{"type": "output_text", "text": text}]}},
                {"type": "response.completed", "response": {"id": "resp_1", "usage": {"input_tokens": 40, "input_tokens_details": {"cached_tokens": 8}, "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 43}}},
            ]
        else:
            users = [t for m in body.get("messages", []) if m.get("role") == "user" for t in _texts(m.get("content"))]
            text = json.dumps({"echo": users[-1] if users else ""})
            events = [
                {"type": "message_start", "message": {"id": "msg_echo", "type": "message", "role": "assistant", "model": body.get("model", ""), "content": [], "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 40, "output_tokens": 1}}},
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
                {"type": "content_block_stop", "index": 0},
                {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 3}},
                {"type": "message_stop"},
            ]
        for event in events:
            self.wfile.write(_sse(event))
        self.wfile.flush()


@pytest.fixture
def echo_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoModel)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def run(name: str, invocation: Invocation, base_env: dict[str, str]):
    provider = get_provider(name)
    try:
        argv = provider.build_command(invocation)
    except ProviderError as exc:
        pytest.skip(exc.message)
    env = agent_environment(provider, invocation, base_env)
    proc = subprocess.run(argv, cwd=invocation.cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180, check=False)
    parser = provider.parser(invocation)
    events = [e for line in proc.stdout.splitlines() for e in parser.feed(line)]
    return parser.finish(exit_code=proc.returncode, stderr_tail=proc.stderr[-2000:]), events


def test_claude_code_gets_the_prompt_intact_and_its_stream_parses(echo_server, tmp_path):
    invocation = Invocation(prompt=PROMPT, cwd=str(tmp_path), model="claude-sonnet-4-5", max_turns=3, permission_mode="acceptEdits", allowed_tools=("Bash", "Write"), options={"base_url": echo_server})

    outcome, events = run("claude", invocation, {**os.environ, "ANTHROPIC_API_KEY": "sk-ant-test-key"})

    assert outcome.success, outcome.error
    assert json.loads(outcome.final_text)["echo"].endswith(PROMPT)
    assert outcome.usage.session_id and outcome.usage.cli_version
    assert outcome.usage.cost_usd is not None
    assert "raw" not in {e.kind for e in events}


def test_codex_gets_the_prompt_intact_through_the_custom_model_provider(echo_server, tmp_path):
    invocation = Invocation(prompt=PROMPT, cwd=str(tmp_path), model="gpt-5", options={"base_url": f"{echo_server}/v1", "sandbox": "danger-full-access"})

    outcome, events = run("codex", invocation, {**os.environ, "TACX_MODEL_API_KEY": "test-key"})

    assert outcome.success, outcome.error
    assert json.loads(outcome.final_text) == {"echo": PROMPT}
    assert outcome.usage.input_tokens == 40 - 8  # the echo server's usage, cached part removed
    assert outcome.usage.cache_read_tokens == 8
    assert outcome.usage.cost_usd is not None
    assert outcome.usage.cli_version
    assert "raw" not in {e.kind for e in events}
