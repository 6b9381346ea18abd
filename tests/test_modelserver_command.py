"""``manage.py serve_model``: foreground server, URL on stdout, request log, clean SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from harness.cli_runs import stop_agent

PROJECT_DIR = Path(__file__).resolve().parent.parent
SCRIPT = PROJECT_DIR / "tests" / "scripts" / "two-stages.yaml"


def test_serve_model_prints_its_url_logs_requests_and_stops_on_sigterm(tmp_path):
    log = tmp_path / "requests.jsonl"
    process = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "serve_model",
            "--script",
            str(SCRIPT),
            "--port",
            "0",
            "--request-log",
            str(log),
        ],
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        request = urllib.request.Request(
            url + "/v1/messages",
            data=json.dumps(
                {
                    "model": "claude-sonnet-4-5",
                    "messages": [{"role": "user", "content": "TACX-STAGE: implement"}],
                    "tools": [{"name": "Bash"}],
                }
            ).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.load(response)["content"][0]["name"] == "Bash"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        stop_agent(process)
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert (record["conversation"], record["turn"], record["status"]) == (
        "implement",
        0,
        200,
    )


def test_serve_model_rejects_a_bad_script(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("conversations:\n  - name: x\n    turns: []\n")
    with pytest.raises(
        CommandError, match=r"conversations\[0\]\.turns: must be a non-empty list"
    ):
        call_command("serve_model", "--script", str(bad), "--port", "0")


def test_serve_model_refuses_a_public_address():
    with pytest.raises(CommandError, match="loopback"):
        call_command("serve_model", "--script", str(SCRIPT), "--host", "0.0.0.0")
