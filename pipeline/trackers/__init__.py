"""Trackers: where triggers come from and progress is reported (see `base` for the contract).

Importing this package registers every tracker kind. A new tracker is a module here with a
`@register`ed `Tracker` subclass, imported below.
"""

from . import github, gitlab  # noqa: F401  (registers "github", "gitlab")
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
