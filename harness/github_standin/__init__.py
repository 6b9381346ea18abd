"""A stand-in for GitHub's REST API on loopback, for the coordinator's tests, the benchmarks and
`manage.py demo --github` (no GitHub account needed).

It follows GitHub's documented request and response shapes for the endpoints TAC-X uses:

  GET   /repos/{o}/{r}/issues?labels=&assignee=&state=&per_page=&page=   issues and PRs (PRs carry a
        `pull_request` key), newest first, `Link` pagination, a weak `ETag`; `If-None-Match`
        with the current ETag answers 304 without touching the rate limit
  GET   /repos/{o}/{r}/issues/{n}/events                        labeled/unlabeled/closed events
  GET   /repos/{o}/{r}/collaborators/{user}/permission          {permission, role_name, user}
  GET   /repos/{o}/{r}/issues/{n}/comments
  POST  /repos/{o}/{r}/issues/{n}/comments                      201 with the comment
  PATCH /repos/{o}/{r}/issues/comments/{id}
  GET   /repos/{o}/{r}/pulls?head=owner:branch&state=open
  POST  /repos/{o}/{r}/pulls                                    201; 422 when an open PR exists
  PATCH /repos/{o}/{r}/pulls/{n}                                `state: closed` closes it (`closed_at`)
  GET   /repos/{o}/{r}/pulls/{n}/reviews                        reviews added with `add_review`
  POST  /repos/{o}/{r}/check-runs                               GitHub App identity only (403 else)
  PATCH /repos/{o}/{r}/check-runs/{id}
  GET   /repos/{o}/{r}/commits/{ref}/check-runs                 {total_count, check_runs}
  POST  /repos/{o}/{r}/statuses/{sha}                           commit statuses (either identity)
  GET   /repos/{o}/{r}/commits/{ref}/statuses

GitHub App (`app_id` + `app_public_key`): `GET /repos/{o}/{r}/installation` and
`POST /app/installations/{id}/access_tokens` need an App JWT, verified like GitHub does: RS256
signature with the App's public key, `iss` the App id, `iat` not in the future, `exp` not past
and at most 10 minutes ahead. Installation tokens (`ghs_…`, `token_lifetime` seconds) are
accepted for the installation's repositories until they expire (401 "Bad credentials" after);
`expire_installation_tokens()` ends them early. `clock` (default time.time) can be pinned.

Git over HTTP (`git_root`): `/git/{owner}/{name}.git/...` is served by the real `git
http-backend` (clone, fetch, push) from bare repositories under `git_root`, with GitHub's rule
for credentials: HTTP Basic `x-access-token:<token>` (an unexpired installation token of the
repository's installation, or the personal token); 401 with `WWW-Authenticate` otherwise.
  GET   /repos/{o}/{r}/pulls/{n}                                the PR; `head.sha` is the branch's
        commit in the repository's bare origin when one is set (`add_repo(origin=...)`)
  GET   /repos/{o}/{r}/pulls/{n}/reviews[/{id}[/comments]]      submitted reviews, their inline comments
  POST  /repos/{o}/{r}/issues/comments/{id}/reactions           201 new, 200 when already there
  POST  /repos/{o}/{r}/pulls/comments/{id}/reactions
  GET   /repos/{o}/{r}/commits/{sha}/check-runs                  {total_count, check_runs}, `Link` pages
  GET   /repos/{o}/{r}/check-suites/{id}/check-runs              the same, for one check suite
  GET   /repos/{o}/{r}/commits/{sha}/status                      combined status {state, statuses,
        total_count}; `statuses` paged by `per_page`/`page` with `Link`, `state` over all of them
  GET   /repos/{o}/{r}/actions/jobs/{id}/logs                    302 to a plain-text download URL on
        another host (a second server on 127.0.0.2, `blob_url`), which needs no credentials
  GET   /repos/{o}/{r}/pulls/{n}/comments                        the PR's inline review comments
  POST  /repos/{o}/{r}/pulls/{n}/comments/{id}/replies           201 with the reply (a review comment
        with `in_reply_to_id`); 404 for an unknown comment, 422 when `id` is itself a reply

A pull request is also an issue (its conversation comments are issue comments), as on GitHub.
`webhook(...)` builds deliveries from the real octokit example payloads with our ids and text.
`close_pull(..., merge=True|False)` and `reopen_pull(...)` do what a person does on GitHub; the
PR then shows `state`, `merged`, `merged_at`, `closed_at` as GitHub's `GET .../pulls/{n}` does,
and `webhook("pull_request.closed" | "pull_request.reopened", ...)` is the matching delivery.

Every answer but a 304 carries X-RateLimit-Limit/Remaining/Used/Reset/Resource and costs one
request of `rate_limit`; at 0 remaining GitHub's 403 "API rate limit exceeded" comes back.
`fail_next(...)` scripts an error answer (e.g. a secondary rate limit: 403 with Retry-After).
A token, when set, is required as `Authorization: Bearer` (401 "Bad credentials" otherwise).

State is in memory and inspectable: `issues`, `events`, `comments` (each with its edit
`history`), `pulls`, `requests` (method, path, query, status, if_none_match, authorization,
host, time).
Timestamps are GitHub's: UTC, whole seconds, `YYYY-MM-DDTHH:MM:SSZ`.
"""

from .common import FIXTURES, WRITE_ROLES, PlainText, RepoState, ScriptedFailure, fixture_bytes, github_now, later_than, user  # noqa: F401
from .server import GitHubStandIn  # noqa: F401
