"""Claude failures: fail fast on a failing model API, and one clear sentence per way of failing."""

from __future__ import annotations

import json

import pytest

from pipeline.providers.claude import ClaudeStreamParser


def retry(attempt: int, error: str, status: int | None) -> str:
    line = {"type": "system", "subtype": "api_retry", "attempt": attempt, "max_retries": 10, "retry_delay_ms": 500, "error_status": status, "error": error, "session_id": "s"}
    return json.dumps(line)


def answer(text: str = "hello") -> str:
    message = {"id": f"msg_{text}", "role": "assistant", "model": "claude-sonnet-4-5", "content": [{"type": "text", "text": text}], "usage": {"input_tokens": 1, "output_tokens": 1}}
    return json.dumps({"type": "assistant", "message": message})


def result(**fields) -> str:
    return json.dumps({"type": "result", "subtype": "success", "is_error": False, "num_turns": 1, "session_id": "s", **fields})


@pytest.mark.parametrize("limit", [2, 3])
def test_other_api_errors_are_fatal_after_the_configured_retries_in_a_row(settings, limit):
    settings.TACX = {**settings.TACX, "AUTH_RETRY_LIMIT": limit}
    parser = ClaudeStreamParser()

    for attempt in range(1, limit):
        parser.feed(retry(attempt, "rate_limit", 429))
        assert parser.fatal is None
    events = parser.feed(retry(limit, "rate_limit", 429))

    assert parser.fatal is not None
    assert "rate_limit" in parser.fatal and "429" in parser.fatal
    assert events[0].kind == "error" and events[0].data["fatal"] is True
    outcome = parser.finish(exit_code=143, killed_reason="fatal stream error")
    assert outcome.error == parser.fatal
    assert outcome.permanent is False


def test_an_answer_between_retries_resets_the_count(settings):
    settings.TACX = {**settings.TACX, "AUTH_RETRY_LIMIT": 2}
    parser = ClaudeStreamParser()

    parser.feed(retry(1, "overloaded", 529))
    parser.feed(answer())
    parser.feed(retry(1, "overloaded", 529))

    assert parser.fatal is None


@pytest.mark.parametrize(("error", "status"), [("authentication_failed", 401), ("unknown", 403), ("billing_error", None)])
def test_an_auth_or_billing_retry_is_fatal_at_once_and_permanent(error, status):
    parser = ClaudeStreamParser()

    parser.feed(retry(1, error, status))

    assert parser.fatal is not None
    assert parser.finish(exit_code=None).permanent is True


def test_a_synthetic_authentication_failed_message_is_fatal():
    parser = ClaudeStreamParser()
    line = {
        "type": "assistant",
        "message": {"id": "x", "model": "<synthetic>", "role": "assistant", "content": [{"type": "text", "text": "Not logged in · Please run /login"}]},
        "error": "authentication_failed",
    }

    events = parser.feed(json.dumps(line))

    assert parser.fatal is not None and "could not authenticate" in parser.fatal
    assert [e.kind for e in events] == ["message", "error"]
    assert "Not logged in" in events[1].data["message"]


def test_an_auth_error_result_is_a_permanent_failure_naming_the_status():
    text = "Invalid API key · Fix external API key"
    parser = ClaudeStreamParser()
    parser.feed(result(is_error=True, api_error_status=401, terminal_reason="api_error", result=text))

    outcome = parser.finish(exit_code=1)

    assert outcome.success is False
    assert "could not authenticate" in outcome.error and "401" in outcome.error and text in outcome.error
    assert outcome.permanent is True


def test_another_api_error_result_names_the_status_and_the_text():
    text = "API Error: 529 overloaded"
    parser = ClaudeStreamParser()
    parser.feed(result(is_error=True, api_error_status=529, result=text))

    outcome = parser.finish(exit_code=1)

    assert outcome.error == f"agent's model API returned HTTP 529: {text}"
    assert outcome.permanent is False


def test_an_error_during_execution_result_is_a_failure_even_with_is_error_false():
    # Old builds said subtype error_during_execution with is_error false (agent-cli-formats §1.2).
    parser = ClaudeStreamParser()
    parser.feed(result(subtype="error_during_execution"))

    outcome = parser.finish(exit_code=0)

    assert outcome.success is False
    assert "error_during_execution" in outcome.error


def test_no_result_line_means_the_agent_exited_without_a_result():
    parser = ClaudeStreamParser()
    parser.feed(answer("partial"))

    outcome = parser.finish(exit_code=143, stderr_tail="line one\nSegmentation fault\n", killed_reason="timeout after 600 s")

    assert outcome.error == "agent exited with code 143 without a result (timeout after 600 s): line one\nSegmentation fault"
    assert outcome.final_text == "partial"
    assert outcome.permanent is False


def test_no_result_line_and_no_exit_code_still_gives_a_sentence():
    outcome = ClaudeStreamParser().finish(exit_code=None)

    assert outcome.success is False
    assert outcome.error == "agent ended without a result"
