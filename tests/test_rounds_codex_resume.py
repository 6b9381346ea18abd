"""`codex exec resume`: the real Codex CLI continues its earlier thread (same id, --json
stream) against the scripted model server, when the session is stored on this machine."""

from __future__ import annotations

import json
import subprocess

import pytest

from harness.cli_runs import DUMMY_API_KEY
from harness.modelserver import ScriptedModelServer
from pipeline.providers import get_provider
from pipeline.providers.base import Invocation, agent_environment

pytestmark = [pytest.mark.cli]

SCRIPT = {"conversations": [{"name": "any", "turns": [{"text": "Done.", "usage": {"input_tokens": 10, "output_tokens": 1}}]}]}


def thread_of(stdout: str) -> str:
    return next(json.loads(line)["thread_id"] for line in stdout.splitlines() if '"thread.started"' in line)


def test_codex_resumes_its_thread_in_a_round(tmp_path, monkeypatch):
    work = tmp_path / "w"
    work.mkdir()
    monkeypatch.setenv("CODEX_HOME", str(tmp_path / "codex-home"))
    monkeypatch.setenv("TACX_MODEL_API_KEY", DUMMY_API_KEY)
    codex = get_provider("codex")
    with ScriptedModelServer(SCRIPT) as server:
        options = {"base_url": f"{server.url}/v1", "sandbox": "workspace-write"}

        def run(inv: Invocation) -> str:
            done = subprocess.run(codex.build_command(inv), cwd=work, env=agent_environment(codex, inv), capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
            assert done.returncode == 0, done.stderr[-2000:]
            return done.stdout

        first = thread_of(run(Invocation(prompt="first", cwd=str(work), model="gpt-5", options=options)))
        assert not codex.can_resume("0f8fad5b-d9cb-469f-a165-70867728950e", cwd=str(work))
        assert codex.can_resume(first, cwd=str(work))
        resumed = Invocation(prompt="second", cwd=str(work), model="gpt-5", options=options, resume_session=first)
        argv = codex.build_command(resumed)
        assert argv[1:3] == ["exec", "resume"] and argv[-3:] == ["--", first, "second"]
        assert thread_of(run(resumed)) == first
        assert len([r for r in server.requests if not r["auxiliary"]]) == 2
