"""The GitHub stand-in: arranging its state (repositories, issues, labels, reviews, checks) and
inspecting it, as a mixin of `GitHubStandIn`."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from .common import RepoState, ScriptedFailure, fixture_bytes, github_now, later_than, user


class Arranging:
    # --- arranging state -------------------------------------------------------------------------

    def next_id(self) -> int:
        with self.lock:
            self._ids += 1
            return self._ids

    def add_repo(self, full_name: str, *, permissions: dict[str, str] | None = None, default_role: str = "read", origin: str = "") -> RepoState:
        with self.lock:
            state = RepoState(full_name, dict(permissions or {}), default_role, origin)
            self.repos[full_name.lower()] = state
            self.issues.setdefault(full_name.lower(), {})
            self.events.setdefault(full_name.lower(), {})
            self.pulls.setdefault(full_name.lower(), {})
            return state

    def set_permission(self, full_name: str, login: str, role: str) -> None:
        with self.lock:
            self.repos[full_name.lower()].permissions[login] = role

    def add_issue(
        self,
        full_name: str,
        *,
        number: int | None = None,
        title: str = "An issue",
        body: str = "",
        author: str = "octocat",
        labels: tuple[str, ...] = (),
        labeled_by: str | None = None,
        labeler_type: str = "User",
        is_pull: bool = False,
    ) -> dict:
        """An open issue (or PR). Each label gets a `labeled` event by `labeled_by` (default:
        the author), as GitHub records for labels applied when an issue is opened."""
        key = full_name.lower()
        with self.lock:
            number = number or (max(list(self.issues[key]) + list(self.pulls[key]) + [0]) + 1)
            now = github_now()
            issue = {
                "id": self.next_id(),
                "node_id": f"I_{number}",
                "url": f"https://api.github.com/repos/{full_name}/issues/{number}",
                "repository_url": f"https://api.github.com/repos/{full_name}",
                "labels_url": f"https://api.github.com/repos/{full_name}/issues/{number}/labels{{/name}}",
                "comments_url": f"https://api.github.com/repos/{full_name}/issues/{number}/comments",
                "events_url": f"https://api.github.com/repos/{full_name}/issues/{number}/events",
                "html_url": f"https://github.com/{full_name}/{'pull' if is_pull else 'issues'}/{number}",
                "number": number,
                "state": "open",
                "state_reason": None,
                "title": title,
                "body": body,
                "user": user(author),
                "labels": [],
                "assignee": None,
                "assignees": [],
                "milestone": None,
                "locked": False,
                "comments": 0,
                "created_at": now,
                "updated_at": now,
                "closed_at": None,
                "author_association": "NONE",
            }
            if is_pull:
                issue["pull_request"] = {
                    "url": f"https://api.github.com/repos/{full_name}/pulls/{number}",
                    "html_url": f"https://github.com/{full_name}/pull/{number}",
                    "diff_url": f"https://github.com/{full_name}/pull/{number}.diff",
                    "patch_url": f"https://github.com/{full_name}/pull/{number}.patch",
                    "merged_at": None,
                }
            self.issues[key][number] = issue
            self.events[key][number] = []
            for label in labels:
                self.label(full_name, number, label, actor=labeled_by or author, actor_type=labeler_type)
            return issue

    def _event(self, full_name: str, number: int, kind: str, actor: str, actor_type: str = "User", **extra) -> dict:
        event = {
            "id": self.next_id(),
            "node_id": f"E_{self._ids}",
            "url": f"https://api.github.com/repos/{full_name}/issues/events/{self._ids}",
            "actor": user(actor, actor_type),
            "event": kind,
            "commit_id": None,
            "commit_url": None,
            "created_at": github_now(),
            "performed_via_github_app": None,
            **extra,
        }
        self.events[full_name.lower()][number].append(event)
        return event

    def label(self, full_name: str, number: int, name: str, *, actor: str, actor_type: str = "User") -> dict:
        with self.lock:
            issue = self.issues[full_name.lower()][number]
            if not any(lb["name"] == name for lb in issue["labels"]):
                issue["labels"].append({"id": self.next_id(), "node_id": "L", "url": "", "name": name, "color": "ededed", "default": False, "description": None})
            issue["updated_at"] = github_now()
            return self._event(full_name, number, "labeled", actor, actor_type, label={"name": name, "color": "ededed"})

    def unlabel(self, full_name: str, number: int, name: str, *, actor: str) -> dict:
        with self.lock:
            issue = self.issues[full_name.lower()][number]
            issue["labels"] = [lb for lb in issue["labels"] if lb["name"] != name]
            issue["updated_at"] = github_now()
            return self._event(full_name, number, "unlabeled", actor, label={"name": name, "color": "ededed"})

    def assign(self, full_name: str, number: int, login: str, *, actor: str, actor_type: str = "User") -> dict:
        with self.lock:
            issue = self.issues[full_name.lower()][number]
            if not any(a["login"] == login for a in issue["assignees"]):
                issue["assignees"].append(user(login))
            issue["assignee"] = issue["assignees"][0]
            issue["updated_at"] = github_now()
            return self._event(full_name, number, "assigned", actor, actor_type, assignee=user(login))

    def unassign(self, full_name: str, number: int, login: str, *, actor: str) -> dict:
        with self.lock:
            issue = self.issues[full_name.lower()][number]
            issue["assignees"] = [a for a in issue["assignees"] if a["login"] != login]
            issue["assignee"] = issue["assignees"][0] if issue["assignees"] else None
            issue["updated_at"] = github_now()
            return self._event(full_name, number, "unassigned", actor, assignee=user(login))

    def close(self, full_name: str, number: int, *, actor: str) -> dict:
        with self.lock:
            issue = self.issues[full_name.lower()][number]
            issue["state"], issue["state_reason"] = "closed", "completed"
            issue["closed_at"] = issue["updated_at"] = github_now()
            return self._event(full_name, number, "closed", actor)

    def close_pull(self, full_name: str, number: int, *, actor: str, merge: bool = False, at: str | None = None, merge_commit_sha: str | None = None) -> dict:
        """Close pull request `number`, merged or not, as a person on GitHub would (`at`: GitHub's
        time of it, default now). Its issue closes too; `merged`, `merged_at`, `merged_by`,
        `merge_commit_sha` (a real commit of the served repository when given) and `closed_at` are
        set as GitHub sets them."""
        with self.lock:
            pull = self.pulls[full_name.lower()][number]
            if pull.get("merged"):
                raise ValueError(f"#{number} is merged already")
            now = at or github_now()
            pull["state"], pull["closed_at"], pull["updated_at"] = "closed", now, now
            if merge:
                pull["merged"], pull["merged_at"], pull["merged_by"] = True, now, user(actor)
                pull["merge_commit_sha"] = merge_commit_sha or hashlib.sha1(f"{full_name}#{number}".encode()).hexdigest()
            issue = self.issues[full_name.lower()][number]
            issue["state"], issue["closed_at"], issue["updated_at"] = "closed", now, now
            self._event(full_name, number, "merged" if merge else "closed", actor)
            return self.public_pull(pull)

    def reopen_pull(self, full_name: str, number: int, *, actor: str, at: str | None = None) -> dict:
        """Reopen a pull request closed without merging (GitHub refuses to reopen a merged one)."""
        with self.lock:
            pull = self.pulls[full_name.lower()][number]
            if pull.get("merged"):
                raise ValueError(f"#{number} is merged: GitHub cannot reopen it")
            now = at or github_now()
            pull["state"], pull["closed_at"], pull["updated_at"] = "open", None, now
            issue = self.issues[full_name.lower()][number]
            issue["state"], issue["closed_at"], issue["updated_at"] = "open", None, now
            self._event(full_name, number, "reopened", actor)
            return self.public_pull(pull)

    def add_installation(self, installation_id: int, *, account: str, repos: tuple[str, ...]) -> None:
        with self.lock:
            self.installations[installation_id] = {"account": account, "repos": {r.lower() for r in repos}}

    def expire_installation_tokens(self) -> None:
        with self.lock:
            for info in self.installation_tokens.values():
                info["expires_at"] = self.clock() - 1

    def add_review(self, full_name: str, number: int, *, login: str, state: str, commit_id: str, kind: str = "User") -> dict:
        with self.lock:
            review = {
                "id": self.next_id(),
                "user": user(login, kind),
                "body": "",
                "state": state,
                "commit_id": commit_id,
                "submitted_at": github_now(),
                "author_association": "MEMBER",
            }
            self.reviews.setdefault((full_name.lower(), number), []).append(review)
            return review

    def checks_on(self, full_name: str, sha: str | None = None) -> list[dict]:
        with self.lock:
            return [c for c in self.check_runs.values() if c["_repo"] == full_name.lower() and (sha is None or c["head_sha"] == sha)]

    def statuses_on(self, full_name: str, sha: str | None = None) -> list[dict]:
        with self.lock:
            return [st for st in self.statuses if st["_repo"] == full_name.lower() and (sha is None or st["_sha"] == sha)]

    def fail_next(self, method: str, path_regex: str, *, status: int = 403, message: str = "You have exceeded a secondary rate limit.", headers: dict[str, str] | None = None, times: int = 1) -> None:
        """The next `times` requests matching answer `status` with GitHub's error shape."""
        with self.lock:
            self.failures.append(ScriptedFailure(method.upper(), re.compile(path_regex), status, message, dict(headers or {}), times))

    def add_comment(self, full_name: str, number: int, body: str, *, author: str = "alice", author_type: str = "User") -> dict:
        """A person's comment on an issue or PR conversation (as posted on GitHub)."""
        with self.lock:
            comment = self.create_comment(full_name, number, body, {}, author=user(author, author_type))
            return comment

    def edit_comment(self, comment_id: int, body: str) -> dict:
        """Edit a comment later (GitHub moves `updated_at`; whole seconds, so at least one on)."""
        with self.lock:
            comment = self.comments[comment_id]
            comment["body"] = body
            comment["updated_at"] = later_than(comment["created_at"])
            comment["history"].append(body)
            return self.public_comment(comment)

    def submit_review(self, full_name: str, number: int, *, author: str, state: str = "CHANGES_REQUESTED", body: str = "", comments: tuple[tuple[str, int, str], ...] = ()) -> dict:
        """A submitted review of PR `number` with a body and inline comments (path, line, body)."""
        with self.lock:
            pull = self.pulls[full_name.lower()][number]
            rid = self.next_id()
            now = github_now()
            sha = self.head_sha(full_name, pull["head"]["ref"])
            review = {
                "id": rid,
                "node_id": f"PRR_{rid}",
                "user": user(author),
                "body": body,
                "state": state,
                "html_url": f"https://github.com/{full_name}/pull/{number}#pullrequestreview-{rid}",
                "pull_request_url": f"https://api.github.com/repos/{full_name}/pulls/{number}",
                "author_association": "MEMBER",
                "submitted_at": now,
                "commit_id": sha,
                "_repo": full_name.lower(),
                "_pull": number,
            }
            self.review_index[rid] = review
            self.reviews.setdefault((full_name.lower(), number), []).append(self.public(review))
            for path, line, text in comments:
                cid = self.next_id()
                self.review_comments[cid] = {
                    "url": f"https://api.github.com/repos/{full_name}/pulls/comments/{cid}",
                    "pull_request_review_id": rid,
                    "id": cid,
                    "node_id": f"PRRC_{cid}",
                    "diff_hunk": "@@ -1,1 +1,1 @@",
                    "path": path,
                    "position": line,
                    "original_position": line,
                    "commit_id": sha,
                    "original_commit_id": sha,
                    "user": user(author),
                    "body": text,
                    "created_at": now,
                    "updated_at": now,
                    "html_url": f"https://github.com/{full_name}/pull/{number}#discussion_r{cid}",
                    "pull_request_url": f"https://api.github.com/repos/{full_name}/pulls/{number}",
                    "author_association": "MEMBER",
                    "start_line": None,
                    "original_start_line": None,
                    "start_side": None,
                    "line": line,
                    "original_line": line,
                    "side": "RIGHT",
                    "reactions_list": [],
                    "_repo": full_name.lower(),
                    "_pull": number,
                }
            return self.public(review)

    def reply_to_review_comment(self, full_name: str, number: int, comment_id: int, payload: Any) -> tuple[int, Any, dict[str, str]]:
        """GitHub's "Create a reply for a review comment": a new review comment in the thread of
        a top-level one (replies to replies are refused), on the same path and line."""
        key = full_name.lower()
        parent = self.review_comments.get(comment_id)
        if parent is None or parent["_repo"] != key or parent["_pull"] != number:
            return 404, {"message": "Not Found", "documentation_url": "https://docs.github.com/rest/pulls/comments#create-a-reply-for-a-review-comment"}, {}
        if parent.get("in_reply_to_id"):
            return 422, {"message": "Validation Failed", "errors": [{"resource": "PullRequestReviewComment", "code": "invalid", "field": "in_reply_to_id"}]}, {}
        if not isinstance(payload, dict) or not payload.get("body"):
            return 422, {"message": "Validation Failed", "errors": [{"resource": "PullRequestReviewComment", "code": "missing_field", "field": "body"}]}, {}
        cid, rid, now = self.next_id(), self.next_id(), github_now()
        reply = {
            **{k: v for k, v in parent.items() if k not in ("reactions_list",)},
            "url": f"https://api.github.com/repos/{full_name}/pulls/comments/{cid}",
            "id": cid,
            "node_id": f"PRRC_{cid}",
            "pull_request_review_id": rid,
            "in_reply_to_id": comment_id,
            "user": user("tacx-bot[bot]", "Bot") if self._local.identity.startswith("installation:") else user("tacx-bot"),
            "body": str(payload["body"]),
            "created_at": now,
            "updated_at": now,
            "html_url": f"https://github.com/{full_name}/pull/{number}#discussion_r{cid}",
            "author_association": "NONE",
            "reactions_list": [],
        }
        self.review_comments[cid] = reply
        return 201, self.public(reply), {}

    def replies_to(self, comment_id: int) -> list[dict]:
        with self.lock:
            return [self.public(c) for c in self.review_comments.values() if c.get("in_reply_to_id") == comment_id]

    def edit_review_comment(self, comment_id: int, body: str) -> None:
        with self.lock:
            comment = self.review_comments[comment_id]
            comment["body"] = body
            comment["updated_at"] = later_than(comment["created_at"])

    def review_comments_of(self, review_id: int) -> list[dict]:
        with self.lock:
            return [self.public(c) for c in self.review_comments.values() if c["pull_request_review_id"] == review_id]

    def add_check_run(self, full_name: str, sha: str, *, name: str, conclusion: str = "failure", log: str = "", app: str = "github-actions", suite: int | None = None) -> dict:
        """A completed check run on commit `sha` (with a job log for GitHub Actions)."""
        with self.lock:
            cid = self.next_id()
            now = github_now()
            run = {
                "id": cid,
                "head_sha": sha,
                "node_id": f"CR_{cid}",
                "external_id": "",
                "url": f"https://api.github.com/repos/{full_name}/check-runs/{cid}",
                "html_url": f"https://github.com/{full_name}/actions/runs/1/job/{cid}",
                "details_url": f"https://github.com/{full_name}/actions/runs/1/job/{cid}",
                "status": "completed",
                "conclusion": conclusion,
                "started_at": now,
                "completed_at": now,
                "output": {"title": f"{name} {conclusion}", "summary": "", "text": None, "annotations_count": 0, "annotations_url": ""},
                "name": name,
                "check_suite": {"id": suite if suite is not None else cid + 1},
                "app": {"id": 15368, "slug": app, "name": "GitHub Actions" if app == "github-actions" else app},
                "pull_requests": [],
                "_repo": full_name.lower(),
                "history": [],
            }
            self.check_runs[cid] = run
            if log:
                self.job_logs[cid] = log
            return self.public(run)

    def head_sha(self, full_name: str, ref: str) -> str:
        import subprocess

        origin = self.repos[full_name.lower()].origin
        if not origin:
            return "0" * 40
        done = subprocess.run(["git", "rev-parse", f"refs/heads/{ref}"], cwd=origin, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else "0" * 40

    def webhook(self, kind: str, full_name: str, *, sender: str, **fields) -> bytes:
        """A delivery body of `kind` (`issue_comment.created`, `pull_request_review.submitted`,
        `pull_request_review_comment.created`, `check_run.completed`, `pull_request.closed`,
        `pull_request.reopened`) from the octokit example, with this repository, these objects
        and this sender."""
        with self.lock:
            if kind == "check_run.completed":
                payload = {"action": "completed", "check_run": fields["check_run"]}
            elif kind in ("pull_request.closed", "pull_request.reopened"):
                # GitHub's `pull_request` payload: action, number, the pull request as the REST
                # API shows it (merged, merged_at, closed_at, ...), repository, sender. The
                # octokit example's pull request object is the base, as for the review events.
                example = json.loads(fixture_bytes("pull_request_review.submitted"))
                pull = self.pulls[full_name.lower()][fields["number"]]
                payload = {"action": kind.split(".")[1], "number": pull["number"], "repository": example["repository"]}
                payload["pull_request"] = {**example["pull_request"], "merged": False, "merged_by": None, **self.public_pull(pull)}
                payload["pull_request"]["head"] = {**example["pull_request"]["head"], "ref": pull["head"]["ref"], "sha": self.head_sha(full_name, pull["head"]["ref"])}
                payload["pull_request"]["base"] = {**example["pull_request"]["base"], "ref": pull["base"]["ref"]}
            else:
                payload = json.loads(fixture_bytes(kind))
            owner, name = full_name.split("/")
            payload["repository"] = {**(payload.get("repository") or {}), "full_name": full_name, "name": name, "owner": user(owner)}
            payload["sender"] = user(sender, "Bot" if sender.endswith("[bot]") else "User")
            if kind == "issue_comment.created":
                issue = self.issues[full_name.lower()][fields["number"]]
                payload["issue"] = {**payload["issue"], **{k: v for k, v in issue.items() if not k.startswith("_")}}
                payload["comment"] = self.public_comment(self.comments[fields["comment_id"]])
            elif kind in ("pull_request_review.submitted", "pull_request_review_comment.created"):
                pull = self.pulls[full_name.lower()][fields["number"]]
                payload["pull_request"] = {**payload["pull_request"], **self.public_pull(pull)}
                payload["pull_request"]["head"] = {**payload["pull_request"]["head"], "ref": pull["head"]["ref"], "sha": self.head_sha(full_name, pull["head"]["ref"])}
                if kind == "pull_request_review.submitted":
                    review = self.public(self.review_index[fields["review_id"]])
                    review["state"] = review["state"].lower()  # webhooks spell it in lower case
                    payload["review"] = {**payload["review"], **review}
                else:
                    payload["comment"] = {**payload["comment"], **self.public(self.review_comments[fields["comment_id"]])}
            elif kind == "check_run.completed":
                run = payload["check_run"]
                pull = next(iter(p for p in self.pulls[full_name.lower()].values() if self.head_sha(full_name, p["head"]["ref"]) == run["head_sha"]), None)
                if pull is not None:
                    run["pull_requests"] = [{"number": pull["number"], "head": {"ref": pull["head"]["ref"], "sha": run["head_sha"]}, "base": pull["base"]}]
                    run["check_suite"] = {**run["check_suite"], "head_branch": pull["head"]["ref"], "head_sha": run["head_sha"]}
            return json.dumps(payload).encode()

    @staticmethod
    def public(item: dict) -> dict:
        return {k: v for k, v in item.items() if not k.startswith("_") and k not in ("history", "reactions_list")}

    # --- inspecting ------------------------------------------------------------------------------

    def comments_on(self, full_name: str, number: int) -> list[dict]:
        with self.lock:
            return [c for c in self.comments.values() if c["_repo"] == full_name.lower() and c["_issue"] == number]

    def pulls_of(self, full_name: str) -> list[dict]:
        with self.lock:
            return list(self.pulls[full_name.lower()].values())

    def requests_to(self, method: str, path_regex: str) -> list[dict]:
        pattern = re.compile(path_regex)
        with self.lock:
            return [r for r in self.requests if r["method"] == method and pattern.search(r["path"])]
