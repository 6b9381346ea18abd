"""Wrappers of the issue trackers that are not forges: Linear (GraphQL, `linear`) and Jira Cloud
(REST v3, `jira`). Each is one thin module with its own error type; what the coordinator makes of
their issues and webhooks lives in `coordinator/linear_tracker.py` and `coordinator/jira_tracker.py`.

Secrets come from the environment or from files (`secret_value`), never from the database."""
