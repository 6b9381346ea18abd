"""Scripted model server: real agent CLIs talk to it instead of a model provider.

It speaks the Anthropic Messages API (Claude Code), the OpenAI Responses API (Codex CLI), the
OpenAI Chat Completions API (Qwen Code, opencode) and the Gemini API (Gemini CLI) on loopback,
with streaming, and plays a script (:mod:`.script`): which tool calls to make, what
text to answer, what usage to report, which HTTP errors to return, how long to wait. The CLI
really runs the tools in its working directory. Modules: :mod:`.script` (format, validation),
:mod:`.exchange` (turn ids, turn selection), :mod:`.anthropic`, :mod:`.openai_responses`,
:mod:`.openai_chat`, :mod:`.gemini`, :mod:`.server` (:class:`ScriptedModelServer`), :mod:`.testing` (argv/env builders, git repo
helper), :mod:`.recording` (re-records ``tests/fixtures/recorded``).
``manage.py serve_model --script PATH [--host 127.0.0.1] [--port 8765] [--request-log FILE]``
runs it in the foreground.

Everything below was established by experiment on this machine (root, no internet) with
Claude Code 2.1.197 and codex-cli 0.169.0; :mod:`.testing` builds exactly this.

Claude Code
-----------
argv (cwd = the git worktree; the prompt after ``--`` so a leading ``-`` is safe)::

    claude -p --output-format stream-json --verbose --model claude-sonnet-4-5
           --allowedTools Bash Write Edit [--max-turns N] -- PROMPT

environment (nothing else inherited)::

    PATH=<node/git/bash>  HOME=<fresh empty temp dir>  LANG=C.UTF-8
    ANTHROPIC_BASE_URL=http://127.0.0.1:PORT      # no /v1: the CLI appends /v1/messages
    ANTHROPIC_API_KEY=<any non-empty value>       # init line shows apiKeySource=ANTHROPIC_API_KEY
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1
    DISABLE_AUTOUPDATER=1  DISABLE_TELEMETRY=1  DISABLE_ERROR_REPORTING=1

* A fresh, empty ``HOME`` works (no login, no onboarding).
* ``--allowedTools Bash Write Edit`` (``permissionMode: default``) and
  ``--permission-mode acceptEdits --allowedTools Bash`` both run Write and Bash without prompts
  and need no ``IS_SANDBOX``. ``--dangerously-skip-permissions`` and
  ``--permission-mode bypassPermissions`` exit 1 as root ("cannot be used with root/sudo
  privileges") unless ``IS_SANDBOX=1``. With only ``--allowedTools Write`` a compound Bash
  command is denied inside the run (tool_result error), the run still ends with ``success``.
* ``CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`` alone removes all non-loopback traffic (checked
  with strace: without it the CLI resolves ``api.anthropic.com``; with it, no DNS at all) and the
  session-title model call. Without it nothing stalls here (DNS fails at once), but the title
  call is an extra request. The three ``DISABLE_*`` switches alone only reduce the lookups of
  ``api.anthropic.com`` (10 to 2) and keep the title call; they are kept as belt and braces.
* Requests it makes: ``HEAD /`` (connection warm-up, answered 200), then one
  ``POST /v1/messages?beta=true`` per model turn (streaming, ``tools`` = its ~25 tools, system
  prompt containing ``Primary working directory: <cwd>``). Without the traffic switch, also one
  session-title call: ``POST /v1/messages`` with ``tools: []`` and
  ``output_config.format = json_schema {title}``, whose user message quotes the prompt. It does
  not call ``count_tokens`` or any other path in ``-p`` mode.
* HTTP 401 on every request: ``system/api_retry`` lines (10 retries with growing delays,
  minutes in total) and no result; with ``CLAUDE_CODE_MAX_RETRIES=0`` it stops at once with a
  ``result`` of ``is_error: true, api_error_status: 401`` and exit 1.
* The ``Write`` tool refuses to overwrite an existing file the session has not read ("File has
  not been read yet"); script ``bash`` (or a raw ``Edit``) for existing files.

Codex CLI
---------
argv (stdin must be ``/dev/null``: codex prints "Reading additional input from stdin..." and
reads a non-TTY stdin to its end)::

    codex exec --json --skip-git-repo-check -C WORKDIR --sandbox workspace-write -m gpt-5
          -c model_provider=tacx
          -c 'model_providers.tacx={name="tacx", base_url="http://127.0.0.1:PORT/v1",
                                    wire_api="responses", env_key="TACX_MODEL_API_KEY"}'
          -c features.plugins=false -c analytics.enabled=false
          -- PROMPT

environment: ``PATH``, ``HOME`` (fresh), ``CODEX_HOME`` (fresh empty temp dir),
``TACX_MODEL_API_KEY=<any value>``, ``LANG=C.UTF-8``.

* ``--sandbox workspace-write`` works here (codex reports ``sandbox: seccomp``): commands can
  write WORKDIR, but ``WORKDIR/.git`` is mounted read-only, so ``git commit`` fails with
  "Read-only file system" (and that failed command produced no ``command_execution`` item on
  stdout). Use ``--sandbox danger-full-access`` for stages whose agent must commit.
* ``features.plugins=false`` stops lookups of github.com/api.github.com/chatgpt.com (plugin
  catalogue sync), ``analytics.enabled=false`` stops ab.chatgpt.com; with both, strace shows
  loopback traffic only. Nothing stalls without them here, but they are off-box calls.
* Adding ``stream_max_retries=0, request_max_retries=0`` to the provider table makes an HTTP
  error fail the turn at once; by default codex prints five ``Reconnecting... n/5`` error lines
  (about 6 s) before ``turn.failed`` and exit 1. A ``hang`` (no response headers) is not ended
  by codex within 40 s even with ``stream_idle_timeout_ms=2000``; the caller's timeout must.
* Harmless noise: an ``item.completed`` of type ``error`` ("Model metadata for `gpt-5` not
  found"), and on stderr "could not create PATH aliases" when CODEX_HOME is under /tmp.
* Requests: only ``POST /v1/responses`` (stream, ``store: false``), no ``/v1/models``, no
  auxiliary calls. Tools offered: ``exec_command`` (``{"cmd": ...}``), ``write_stdin``,
  ``request_user_input``, ``view_image``, a ``multi_agent_v1`` namespace, goal tools,
  ``web_search``; no ``apply_patch`` for ``gpt-5``. So ``bash`` → ``exec_command {cmd}`` and
  ``write`` → ``exec_command`` running ``mkdir -p DIR && printf '%s' CONTENT > PATH``.
* Codex runs all function calls of one response concurrently (a scripted ``git add`` raced
  the ``write`` before it), so the server sends a turn's tool calls one per response, in order
  (see :mod:`.exchange`); a turn with ``n`` calls costs codex ``n`` model requests.

Usage: script → what the CLI reports
------------------------------------
Script usage has Anthropic semantics (input excludes cache tokens). Over the scripted turns
``t`` of one run (auxiliary and overrun answers report zero):

* Claude ``result.usage`` (and ``modelUsage[model]``): ``input_tokens = Σ input_tokens``,
  ``output_tokens = Σ output_tokens``, ``cache_read_input_tokens = Σ cache_read_input_tokens``,
  ``cache_creation_input_tokens = Σ cache_creation_input_tokens``, exactly. ``total_cost_usd``
  is Claude Code's own price for the model on those numbers. Every answer has a fresh message
  id (Claude Code de-duplicates usage by message id; several ``assistant`` lines share one).
* Codex ``turn.completed.usage`` is cumulative over every response of the exec turn:
  ``input_tokens = Σ (input + cache_read + cache_creation)``,
  ``cached_input_tokens = Σ cache_read``, ``cache_write_input_tokens = Σ cache_creation``,
  ``output_tokens = Σ output_tokens``, ``reasoning_output_tokens = Σ reasoning_tokens``.
  (The server sends ``input_tokens`` with cached tokens included, as OpenAI does, and
  ``input_tokens_details.{cached_tokens, cache_write_tokens}``.) So the non-cached input is
  ``input_tokens - cached_input_tokens - cache_write_input_tokens`` = Σ script input_tokens.

Gemini CLI, Qwen Code, opencode
-------------------------------
Driven through their providers (``pipeline.providers.gemini/qwen/opencode``; the helper
:func:`.testing.provider_command` builds exactly what the runner builds), measured with
@google/gemini-cli 0.61.0, @qwen-code/qwen-code 0.24.4 and opencode-ai 1.18.33:

* Gemini CLI: ``GOOGLE_GEMINI_BASE_URL=<server url>`` + ``GEMINI_API_KEY``, settings in
  ``$HOME/.gemini/settings.json`` (API-key auth, else exit 41); requests
  ``POST /v1beta/models/<model>:streamGenerateContent?alt=sse``; it sends the server's
  ``functionCall.id`` back in ``functionResponse.id``, so turn counting by ids works.
  ``result.stats`` = the sums of the last ``usageMetadata`` of every call.
* Qwen Code: ``OPENAI_BASE_URL=<url>/v1`` + ``OPENAI_API_KEY``; ``POST /v1/chat/completions``
  with ``stream_options.include_usage``; ``result.usage.input_tokens`` = Σ ``prompt_tokens``
  (cached included), ``cache_read_input_tokens`` = Σ ``cached_tokens``. After a text-only
  answer it may start a "managed memory extraction" subagent (another call with tools whose
  first user message repeats the prompt): the provider's settings turn it off.
* opencode: ``OPENCODE_CONFIG_CONTENT`` with an ``@ai-sdk/openai-compatible`` provider at
  ``<url>/v1``; one auxiliary title call without tools, then ``POST /v1/chat/completions`` per
  step. It offers ``gpt-*`` models ``apply_patch`` instead of ``write`` (the server then sends an
  "Add File" patch). ``step_finish.tokens.input`` excludes the cached tokens.
* All three run a turn's calls one per response here (sequential mode, as for Codex), so a
  scripted ``write`` then ``bash`` run in that order; a turn with ``n`` calls costs ``n`` model
  requests, and its usage goes with the first.

Turns and concurrency
---------------------
Turn counting is stateless (see :mod:`.exchange`): generated tool-call ids carry the turn, so
any number of concurrent runs can share one server, and a retried request (after a scripted
error) gets the same turn again — a turn with ``status`` fails every retry. A request is
"auxiliary" when it offers no tools; it never consumes a turn and reports zero usage. Claude
Code gets all of a turn's tool calls in one message and runs them in order (observed: a
``cat`` scripted after a slow ``sleep 1 && echo > f`` and after a ``write`` sees the file);
Codex gets them one per response.
"""

from .script import Script, ScriptError, load_script
from .server import ScriptedModelServer

__all__ = ["Script", "ScriptError", "ScriptedModelServer", "load_script"]
