"""`manage.py run_workers`: django-q2's `qcluster` whose graceful stop hands prefetched stages
back to the queue (pipeline.graceful_stop) instead of running them all before exiting."""

from __future__ import annotations

import os

from django.conf import settings
from django_q.cluster import Cluster
from django_q.management.commands.qcluster import Command as QClusterCommand

from pipeline import graceful_stop


class HandBackCluster(Cluster):
    def sig_handler(self, signum, frame):
        # Before q2 starts its stop: from now on a job taken from the queue is handed back.
        graceful_stop.mark_stopping(os.getpid())
        super().sig_handler(signum, frame)


class Command(QClusterCommand):
    help = "Start a django-q2 cluster that hands its prefetched stage jobs back when stopped."

    def handle(self, *args, **options):
        settings.SECRET_KEY  # noqa: B018 - q2 signs jobs with it: fail now, not in a worker
        if options.get("cluster_name"):
            os.environ["Q_CLUSTER_NAME"] = options["cluster_name"]
        os.environ[graceful_stop.ENV] = str(os.getpid())  # inherited by the sentinel and the workers
        graceful_stop.clear(os.getpid())
        cluster = HandBackCluster()
        try:
            cluster.start()
            if options.get("run_once", False):
                cluster.stop()
        finally:
            graceful_stop.clear(os.getpid())
