"""Trackers: where triggers come from and progress is reported (see `base` for the contract).

Importing this package registers every tracker kind. A new tracker is a module here with a
`@register`ed `Tracker` subclass, imported below.
"""

from . import github, gitlab, jira, linear  # noqa: F401  (register "github", "gitlab", "jira", "linear")
from .base import (  # noqa: F401
    TRACKERS,
    Actor,
    PayloadError,
    Permission,
    Tracker,
    TrackerError,
    TrackerEvent,
    TrackerIssue,
    WebhookRefused,
    forget_instances,
    register,
    tracker_for,
    tracker_named,
)
