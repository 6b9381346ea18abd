"""The error of a tracker's or forge's API (GitLab, Linear, Jira): whether retrying can help
(`permanent`), when (`retry_after` seconds) and the HTTP status. A leaf module, so API clients
(`pipeline.gitlab_api`) and the seams (`pipeline.trackers`) share it without importing each other."""

from __future__ import annotations


class TrackerError(Exception):
    """A tracker's or forge's API failed. `status`: the HTTP status when there was one."""

    def __init__(self, message: str, *, status: int | None = None, permanent: bool = False, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.permanent = permanent
        self.retry_after = retry_after
