"""`manage.py run_stage_host --socket PATH`: this machine's stage host (pipeline.stage_host).
`manage.py run_workers` starts it and starts it again if it dies; run it alone only to debug."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from pipeline import stage_host


class Command(BaseCommand):
    help = "Run many stage attempts at once in this process, handed over a Unix socket by django-q2 jobs."

    def add_arguments(self, parser):
        parser.add_argument("--socket", required=True, help="the Unix socket the q2 jobs connect to")

    def handle(self, *args, **options):
        stage_host.serve(options["socket"])
