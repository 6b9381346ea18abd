"""`manage.py run_coordinator [--once] [--tick SECONDS]`: the long-lived coordinator process
(see `coordinator.loop`). SIGTERM/SIGINT finish the current step and exit."""

from __future__ import annotations

import signal

from django.core.management.base import BaseCommand

from coordinator.loop import Coordinator
from pipeline.alerts import heartbeat_check_schedule


class Command(BaseCommand):
    help = "Watch repositories, start tasks within limits, reap lost workers, keep progress comments current."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="Run one cycle of every step and exit (tests, cron).")
        parser.add_argument("--tick", type=float, default=None, help="Seconds to sleep when a cycle found nothing to do.")

    def handle(self, *args, **options) -> None:
        coordinator = Coordinator(tick=options["tick"])
        if options["once"]:
            coordinator.run_once()
            return
        # The stale-heartbeat alert runs in the q2 cluster: a dead coordinator cannot report itself.
        heartbeat_check_schedule()
        signal.signal(signal.SIGTERM, coordinator.stop)
        signal.signal(signal.SIGINT, coordinator.stop)
        coordinator.run()
