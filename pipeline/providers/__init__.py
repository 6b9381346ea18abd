"""Agent providers: one module per coding-agent CLI, one registry, one tiny base class.

Event kinds and their ``data`` (see ``base.Event``):

* ``system``: ``{subtype, ...}`` (``init`` carries ``model``, ``session_id``, ``cli_version``)
* ``message``: ``{role, text}``; role ``assistant``, ``user``, ``thinking`` or ``reasoning``
* ``tool_call``: ``{id, name, input}``
* ``tool_result``: ``{id, output, is_error}`` (output truncated to 20,000 characters)
* ``usage``: running totals ``{input_tokens, output_tokens, cache_read_tokens,
  cache_write_tokens, cost_usd}`` (``cost_usd`` a decimal string or ``None``)
* ``error``: ``{message, fatal}``
* ``result``: ``{subtype, is_error, text}``
* ``raw``: ``{line, error}`` for a line that is not JSON or not understood
* ``output``: ``{text}`` one line a non-model program (the ``command`` provider's ``text``
  format) wrote on stdout
* ``stderr``: ``{text}`` one line the program wrote on stderr (parsers with ``capture_stderr``:
  the ``command`` provider's), at most ``base.STDERR_EVENTS_LIMIT`` bytes per attempt
"""

from __future__ import annotations

from .base import Event, Invocation, Outcome, Provider, ProviderError, StreamParser, Usage, agent_environment, resolve_executable
from .claude import ClaudeProvider
from .codex import CodexProvider
from .command import CommandProvider
from .gemini import GeminiProvider
from .opencode import OpencodeProvider
from .qwen import QwenProvider

PROVIDERS: dict[str, type[Provider]] = {
    cls.name: cls for cls in (ClaudeProvider, CodexProvider, GeminiProvider, QwenProvider, OpencodeProvider, CommandProvider)
}


def get_provider(name: str) -> Provider:
    """A provider instance by registry name; ``ProviderError(permanent=True)`` naming the known
    providers when there is none by that name."""
    try:
        return PROVIDERS[name]()
    except (KeyError, TypeError):
        known = ", ".join(sorted(PROVIDERS))
        raise ProviderError(f"unknown agent provider {name!r} (known: {known})", permanent=True) from None


__all__ = [
    "PROVIDERS",
    "Event",
    "Invocation",
    "Outcome",
    "Provider",
    "ProviderError",
    "StreamParser",
    "Usage",
    "agent_environment",
    "get_provider",
    "resolve_executable",
]
