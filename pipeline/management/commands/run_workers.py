"""`manage.py run_workers`: this machine's stage host (pipeline.stage_host) and the django-q2
cluster whose jobs hand it stages. The host runs as a child process (`manage.py run_stage_host`)
in this process's session, started again within a second if it dies (a SIGKILL, an OOM kill);
its socket lives in a private directory whose path the cluster's workers inherit. The cluster's
graceful stop hands prefetched stages back to the queue (pipeline.graceful_stop) instead of
running them all before exiting; the host then finishes its running attempts and exits.

With `TACX_STAGE_HOST_ATTEMPTS=0` (the previous model) there is no host: each q2 worker runs
one attempt in its job."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from django.conf import settings
from django_q.cluster import Cluster
from django_q.management.commands.qcluster import Command as QClusterCommand

from pipeline import graceful_stop, slots, stage_host

log = logging.getLogger(__name__)


class HostSupervisor:
    """Keeps `manage.py run_stage_host` running until `stop`."""

    def __init__(self, path: str):
        self.path = path
        self.stopping = threading.Event()
        self.proc: subprocess.Popen | None = None
        self.lock = threading.Lock()
        self._start()
        # Jobs taken before the host listens would only be refused: wait for its socket first.
        deadline = time.monotonic() + 60
        while not os.path.exists(path) and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        self.thread = threading.Thread(target=self._watch, name="tacx-stage-host-watch", daemon=True)
        self.thread.start()

    def _start(self) -> None:
        manage = Path(settings.BASE_DIR) / "manage.py"
        self.proc = subprocess.Popen([sys.executable, str(manage), "run_stage_host", "--socket", self.path])

    def _watch(self) -> None:
        while not self.stopping.wait(0.5):
            with self.lock:
                if self.stopping.is_set() or graceful_stop.cluster_stopping():
                    return  # the cluster stops: the host (signalled with it) ends on its own
                code = self.proc.poll() if self.proc else None
                if code is not None:
                    log.error("the stage host %s exited (%s); starting it again", self.proc.pid, code)
                    self._start()

    def stop(self) -> None:
        with self.lock:
            self.stopping.set()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # it finishes its running attempts
            self.proc.wait()


class HandBackCluster(Cluster):
    def sig_handler(self, signum, frame):
        # Before q2 starts its stop: from now on a job taken from the queue is handed back.
        graceful_stop.mark_stopping(os.getpid())
        super().sig_handler(signum, frame)


class Command(QClusterCommand):
    help = "Start this machine's stage host and a django-q2 cluster that hands it stages (and hands prefetched jobs back when stopped)."

    def handle(self, *args, **options):
        settings.SECRET_KEY  # noqa: B018 - q2 signs jobs with it: fail now, not in a worker
        if options.get("cluster_name"):
            os.environ["Q_CLUSTER_NAME"] = options["cluster_name"]
        os.environ[graceful_stop.ENV] = str(os.getpid())  # inherited by the sentinel and the workers
        graceful_stop.clear(os.getpid())
        host, private = None, None
        if slots.host_attempts() > 0:
            private = tempfile.mkdtemp(prefix="tacx-host-")  # 0700; short enough for a socket path
            os.environ[stage_host.ENV] = os.path.join(private, "host.sock")
            host = HostSupervisor(os.environ[stage_host.ENV])
        cluster = HandBackCluster()
        try:
            cluster.start()
            if options.get("run_once", False):
                cluster.stop()
            # q2's start returns once the sentinel runs (Python then joins it at exit): the host
            # is stopped only once the cluster has stopped.
            while host is not None and cluster.sentinel.is_alive():
                time.sleep(0.5)
        finally:
            if host is not None:
                host.stop()
            if private is not None:
                shutil.rmtree(private, ignore_errors=True)
            graceful_stop.clear(os.getpid())
