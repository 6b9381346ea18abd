"""The GitHub forge: `GitHubClient` (the endpoints, on `transport.Transport`) and its errors.
`from pipeline.github import GitHubClient, GitHubError` keeps working."""

from .client import GitHubClient, IssueListing  # noqa: F401
from .transport import GitHubError, GitHubPublishBlocked, Response, header, next_link  # noqa: F401
