"""An idle coordinator's cost (issue 10, item 7): after a cycle that found nothing, only the
steps a user waits for (webhook deliveries, dispatch) look again every tick; housekeeping steps
wait TACX_HOUSEKEEPING_SECONDS."""

from __future__ import annotations

from django.db import connection
from django.test.utils import CaptureQueriesContext

from coordinator.loop import Coordinator


def test_an_idle_coordinator_runs_only_its_urgent_steps_every_tick(db, settings):
    settings.TACX = {**settings.TACX, "HOUSEKEEPING_SECONDS": 60.0}
    coordinator = Coordinator(host="idle-host", sources={})
    with CaptureQueriesContext(connection) as first:
        coordinator.run_cycle()
    with CaptureQueriesContext(connection) as second:
        coordinator.run_cycle()
    assert len(second.captured_queries) < len(first.captured_queries) / 2, (len(first), len(second))
    assert len(second.captured_queries) <= 4, [q["sql"][:80] for q in second.captured_queries]
