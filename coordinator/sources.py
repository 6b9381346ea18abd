"""Issue sources: where the coordinator looks for issues carrying a repository's trigger label.

One class per repository kind, one registry (`SOURCES`). A source polls one repository at a
time and turns what it finds into `triggers.trigger_handle` / `untrigger_handle` calls. Local
repositories have no issue tracker: their tasks come from the API, the admin or `run_task`.
"""

from __future__ import annotations

from pipeline.models import Repository


class SourceUnavailable(Exception):
    """The source cannot be asked now (rate limit, outage); `retry_after` seconds is when to
    try again (None: the coordinator's usual back-off)."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class IssueSource:
    """One kind of issue tracker. `poll` handles one repository and says what it did."""

    kind: str = ""

    def blocked_for(self) -> float:
        """Seconds before this source may be asked anything (0 when it may now)."""
        return 0.0

    def poll(self, repository: Repository) -> str:
        raise NotImplementedError

