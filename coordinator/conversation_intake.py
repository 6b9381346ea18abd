"""What the webhook keeps of a conversation delivery, in the request (no GitHub calls): whether it
may start a round at all (`relevance`), and the parts of the payload stored for the coordinator
to act on later (`payload_summary`). The rules of `coordinator.conversation` apply."""

from __future__ import annotations

from pipeline.models import Repository

from .conversation import FAILED_CONCLUSIONS, is_own, own_check
from .lookups import repository_for


def relevance(event: str, payload: dict) -> tuple[Repository | None, int | None, str]:
    """(repository, issue or PR number, "") for a delivery that may start a round, else
    (None, None, why it is ignored)."""
    action = str(payload.get("action", ""))
    full_name = str((payload.get("repository") or {}).get("full_name", ""))
    sender = payload.get("sender") or {}
    if event == "issue_comment":
        if action != "created":
            return None, None, f"ignored: issue_comment.{action} (the text at trigger time counts; edits never trigger)"
        comment = payload.get("comment") or {}
        body = str(comment.get("body") or "")
        if "/tacx" not in body.lower() and "@" not in body:
            return None, None, "ignored: no mention and no /tacx command"
        number = (payload.get("issue") or {}).get("number")
    elif event == "pull_request_review":
        if action != "submitted":
            return None, None, f"ignored: pull_request_review.{action}"
        state = str((payload.get("review") or {}).get("state", "")).lower()
        if state not in ("changes_requested", "commented"):
            return None, None, f"ignored: a review that is {state or 'empty'}"
        number = (payload.get("pull_request") or {}).get("number")
    elif event == "pull_request_review_comment":
        if action != "created":
            return None, None, f"ignored: pull_request_review_comment.{action} (edits never trigger)"
        number = (payload.get("pull_request") or {}).get("number")
    elif event in ("check_suite", "check_run", "workflow_run"):
        item = payload.get(event) or {}
        if action != "completed" or item.get("conclusion") not in FAILED_CONCLUSIONS:
            return None, None, f"ignored: {event}.{action} {item.get('conclusion') or ''}".rstrip()
        if event == "check_run" and own_check(str(item.get("name") or "")):
            return None, None, "ignored: TAC-X's own activity"
        pulls = item.get("pull_requests") or (item.get("check_suite") or {}).get("pull_requests") or []
        number = pulls[0].get("number") if pulls and isinstance(pulls[0], dict) else None
    elif event == "status":
        if payload.get("state") not in ("failure", "error"):
            return None, None, f"ignored: status {payload.get('state')}"
        if own_check(str(payload.get("context") or "")):
            return None, None, "ignored: TAC-X's own activity"
        number = None
    else:
        return None, None, f"ignored: {event} events start nothing"
    if is_own(str(sender.get("login", "")), str(((payload.get("comment") or payload.get("review") or {}).get("body")) or "")):
        return None, None, "ignored: TAC-X's own activity"
    repository = repository_for(full_name)
    if repository is None:
        return None, None, f"ignored: {full_name or 'the repository'} is not registered (or disabled)"
    return repository, int(number) if isinstance(number, int) else None, ""


def payload_summary(event: str, payload: dict) -> dict:
    """What handling needs later — including the trigger's text as delivered (frozen)."""
    sender = payload.get("sender") or {}
    summary: dict = {
        "event": event,
        "action": payload.get("action", ""),
        "repository": (payload.get("repository") or {}).get("full_name", ""),
        "sender": {"login": sender.get("login", ""), "type": sender.get("type", "")},
    }
    if event == "issue_comment":
        issue, comment = payload.get("issue") or {}, payload.get("comment") or {}
        summary["issue"] = {"number": issue.get("number"), "is_pull": "pull_request" in issue, "state": issue.get("state", "")}
        summary["comment"] = _comment(comment)
    elif event in ("pull_request_review", "pull_request_review_comment"):
        pull = payload.get("pull_request") or {}
        summary["pull"] = {"number": pull.get("number"), "head_sha": (pull.get("head") or {}).get("sha", ""), "head_ref": (pull.get("head") or {}).get("ref", "")}
        if event == "pull_request_review":
            review = payload.get("review") or {}
            summary["review"] = {
                "id": review.get("id"),
                "state": review.get("state", ""),
                "body": review.get("body") or "",
                "user": (review.get("user") or {}).get("login", ""),
                "user_type": (review.get("user") or {}).get("type", ""),
                "submitted_at": review.get("submitted_at") or "",
                "commit_id": review.get("commit_id") or "",
            }
        else:
            comment = payload.get("comment") or {}
            summary["comment"] = {**_comment(comment), "review_id": comment.get("pull_request_review_id"), "path": comment.get("path", ""), "line": comment.get("line") or comment.get("original_line")}
    elif event in ("check_suite", "check_run", "workflow_run"):
        item = payload.get(event) or {}
        suite = item.get("check_suite") or {}
        summary["check"] = {
            "name": item.get("name") or (item.get("app") or {}).get("name", event),
            "head_sha": item.get("head_sha") or suite.get("head_sha", ""),
            "head_branch": item.get("head_branch") or suite.get("head_branch", ""),
            "conclusion": item.get("conclusion", ""),
        }
    elif event == "status":
        summary["check"] = {
            "name": payload.get("context", "status"),
            "head_sha": payload.get("sha", ""),
            "head_branch": ((payload.get("branches") or [{}])[0] or {}).get("name", ""),
            "conclusion": payload.get("state", ""),
        }
    return summary


def _comment(comment: dict) -> dict:
    user = comment.get("user") or {}
    return {
        "id": comment.get("id"),
        "body": comment.get("body") or "",
        "user": user.get("login", ""),
        "user_type": user.get("type", ""),
        "created_at": comment.get("created_at") or "",
        "updated_at": comment.get("updated_at") or "",
        "html_url": comment.get("html_url") or "",
    }
