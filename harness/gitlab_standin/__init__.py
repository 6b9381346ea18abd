"""A GitLab stand-in on loopback for tests and demos: REST v4 in GitLab's documented shapes
(`server`) and webhook deliveries built from GitLab's documented examples (`state`)."""

from .server import GitLabStandIn  # noqa: F401
from .state import FIXTURES, LEVELS, fixture  # noqa: F401
