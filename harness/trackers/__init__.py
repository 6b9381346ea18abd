"""Loopback stand-ins for the trackers that are not forges: Linear (`linear.LinearStandIn`, a
GraphQL server over a subset of Linear's schema, run by graphql-core) and Jira Cloud
(`jira.JiraStandIn`, REST v3). Both sign webhook deliveries as the vendor does, from the example
payloads in `tests/fixtures/linear-webhooks/` and `tests/fixtures/jira-webhooks/`."""
