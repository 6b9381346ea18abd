"""`manage.py demo --github`: the GitHub path without a GitHub account.

The GitHub stand-in (`harness.github_standin`, GitHub's documented REST shapes on loopback) plays
github.com. The stack's coordinator polls it as it would poll GitHub, with `GITHUB_API_URL`
pointing at it:

1. an issue is opened on the stand-in and labelled with the repository's trigger label by a
   user with write access (`you`): the coordinator's poll turns it into a task;
2. the task runs every stage with the real `claude` CLI against the scripted model server and
   opens a draft pull request on the stand-in;
3. `you` submit a review with an inline comment: the coordinator's conversation poll turns it
   into a round, whose building stage resumes the builder's session, commits the fix, pushes it to
   the same pull request and replies on the review thread.

The branches are pushed to a bare repository on disk (the repository's clone URL), as in the
tests. Nothing here is stored: the stand-in's state lives in this process and ends with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from harness.github_standin import GitHubStandIn
from pipeline.models import Repository, Round, Task

REPOSITORY = "tacx-demo/greeter"
LOGIN = "you"  # the stand-in's user with admin rights on REPOSITORY: allowed to trigger and to review
TOKEN = "ghp_tacxDemoStandInTokenNotASecret00"  # what the stand-in accepts; not a GitHub token
ISSUE_BODY = "greet() says hello; we also need farewell(name) returning 'Goodbye, <name>', with tests."
REVIEW_BODY = "Nearly there. One more thing, inline."
REVIEW_COMMENT = "Please add greet_all(names) that greets each name in a list."


class GitHubDemo:
    """The stand-in, the repository it serves, and the two acts (issue to draft PR, review to round)."""

    def __init__(self, *, origin: Path, say: Callable[[str], None]):
        self.origin = origin
        self.say = say
        self.standin = GitHubStandIn(token=TOKEN).start()

    def stop(self) -> None:
        self.standin.stop()

    def stack_env(self) -> dict[str, str]:
        """What the stack's processes need to talk to the stand-in, polling fast enough to watch."""
        return {
            "GITHUB_API_URL": self.standin.url,
            "GITHUB_TOKEN": TOKEN,
            "GITHUB_APP_ID": "",
            "TACX_POLL_INTERVAL": "1",
            "TACX_CONVERSATION_POLL_INTERVAL": "2",
        }

    def repository(self) -> Repository:
        repository, _ = Repository.objects.update_or_create(
            kind=Repository.Kind.GITHUB,
            full_name=REPOSITORY,
            defaults={"clone_url": str(self.origin), "local_path": "", "default_branch": "main", "enabled": True},
        )
        return repository

    def cancel_leftovers(self, cancel: Callable[[Task, str], bool]) -> None:
        """Tasks an interrupted GitHub demo left active: their stand-in and origin are gone."""
        for task in Task.objects.filter(repository__kind=Repository.Kind.GITHUB, repository__full_name=REPOSITORY, status__in=Task.ACTIVE):
            if cancel(task, "cancelled: a new GitHub demo run started with a fresh stand-in and origin"):
                self.say(f"Cancelled task {task.pk} left active by an earlier GitHub demo run.")

    def open_issue(self, *, title: str, stack_alive: Callable[[], None], timeout: float = 60) -> Task:
        """Act 1: open and label an issue on the stand-in; the coordinator's poll makes the task."""
        repository = self.repository()
        self.standin.add_repo(REPOSITORY, permissions={LOGIN: "admin"}, origin=str(self.origin))
        # The stand-in starts empty each run; the database remembers earlier runs' issue numbers
        # (one task per issue, ever), so the new issue takes the next number.
        number = (Task.objects.filter(repository=repository).order_by("-issue_number").values_list("issue_number", flat=True).first() or 0) + 1
        self.standin.add_issue(REPOSITORY, number=number, title=title, body=ISSUE_BODY, author=LOGIN, labels=(repository.trigger_label,), labeled_by=LOGIN)
        self.say(
            f"GitHub stand-in on {self.standin.url}: issue #{number} opened on {REPOSITORY} and labelled "
            f"'{repository.trigger_label}' by {LOGIN} (admin). The coordinator polls it like GitHub..."
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stack_alive()
            task = Task.objects.filter(repository=repository, issue_number=number).first()
            if task is not None:
                self.say(f"Task {task.pk} created from issue #{number} by the coordinator's poll.")
                return task
            time.sleep(0.5)
        raise TimeoutError(f"the coordinator did not pick up issue #{number} within {timeout:.0f} s")

    def pull_request(self, task: Task) -> dict:
        return self.standin.pulls[REPOSITORY.lower()][task.pr_number]

    def review(self, task: Task, *, stack_alive: Callable[[], None], timeout: float = 60) -> Round:
        """Act 2: a review with an inline comment on the draft PR; the conversation poll makes a round."""
        pull = self.pull_request(task)
        kind = "Draft pull request" if pull.get("draft") else "Pull request"
        self.say(f"{kind} #{task.pr_number} opened on the stand-in: {pull['title']!r} ({self.standin.url}/repos/{REPOSITORY}/pulls/{task.pr_number})")
        review = self.standin.submit_review(
            REPOSITORY, task.pr_number, author=LOGIN, body=REVIEW_BODY, comments=(("greeter.py", 2, REVIEW_COMMENT),)
        )
        self.say(f"{LOGIN} reviewed PR #{task.pr_number} (changes requested) with an inline comment on greeter.py: {REVIEW_COMMENT!r}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stack_alive()
            round_ = Round.objects.filter(task=task).order_by("-id").first()
            if round_ is not None:
                self.say(f"Round {round_.pk} ({round_.kind}) started from review {review['id']}.")
                return round_
            time.sleep(0.5)
        raise TimeoutError(f"no round started from the review within {timeout:.0f} s")

    def replies(self, round_: Round) -> list[str]:
        """The bodies TAC-X posted on the stand-in about this round."""
        marker = f"tacx:round:{round_.pk}"
        bodies = [c["body"] for c in self.standin.comments.values() if marker in c.get("body", "")]
        bodies += [c["body"] for c in self.standin.review_comments.values() if marker in c.get("body", "")]
        return bodies
