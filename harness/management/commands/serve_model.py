"""``manage.py serve_model``: run the scripted model server in the foreground.

Prints the base URL on the first line of stdout (``http://127.0.0.1:PORT``), then serves until
SIGTERM or SIGINT. ``--port 0`` picks a free port.
"""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from harness.modelserver import ScriptedModelServer, ScriptError


class Command(BaseCommand):
    help = "Serve a scripted model (Anthropic Messages, OpenAI Responses and Chat Completions, Gemini API) on loopback."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--script", required=True, help="YAML or JSON script file")
        parser.add_argument(
            "--host", default="127.0.0.1", help="loopback address to bind"
        )
        parser.add_argument(
            "--port", type=int, default=8765, help="port (0 = any free port)"
        )
        parser.add_argument(
            "--request-log", default=None, help="append one JSON line per request here"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            server = ScriptedModelServer(
                options["script"],
                host=options["host"],
                port=options["port"],
                request_log=options["request_log"],
            )
        except (ScriptError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        stop = threading.Event()
        # Signal handlers only set a flag; the main thread does the shutdown.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        try:
            server.start()
        except OSError as exc:
            raise CommandError(
                f"cannot listen on {options['host']}:{options['port']}: {exc.strerror or exc}"
            ) from exc
        self.stdout.write(server.url)
        self.stdout.flush()
        try:
            while not stop.wait(0.5):
                pass
        finally:
            server.stop()
            self.stderr.write("scripted model server stopped")
