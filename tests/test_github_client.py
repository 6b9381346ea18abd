"""pipeline.github against the stand-in: listings with ETags, events, permissions, comments,
pull requests, rate limits."""

from __future__ import annotations

import pytest
from github_standin import TOKEN, GitHubStandIn, standin  # noqa: F401

from pipeline.github import GitHubClient, GitHubError


@pytest.fixture
def gh(standin):  # noqa: F811
    return GitHubClient(base_url=standin.url, token=TOKEN)


def test_it_lists_labelled_open_issues_without_pull_requests(gh, standin):  # noqa: F811
    standin.add_issue("octo/sample", number=1, title="one", labels=("rpi-auto",))
    standin.add_issue("octo/sample", number=2, title="unlabelled")
    standin.add_issue("octo/sample", number=3, title="a PR", labels=("rpi-auto",), is_pull=True)
    standin.add_issue("octo/sample", number=4, title="closed", labels=("rpi-auto",))
    standin.close("octo/sample", 4, actor="alice")
    listing = gh.issues_labelled(full_name="octo/sample", label="rpi-auto")
    assert [i["number"] for i in listing.issues] == [1]
    assert listing.etag.startswith('W/"') and not listing.not_modified


def test_an_unchanged_listing_answers_304_and_costs_no_rate_limit(gh, standin):  # noqa: F811
    standin.add_issue("octo/sample", number=1, labels=("rpi-auto",))
    first = gh.issues_labelled(full_name="octo/sample", label="rpi-auto")
    remaining = gh.rate_remaining
    again = gh.issues_labelled(full_name="octo/sample", label="rpi-auto", etag=first.etag)
    assert again.not_modified and again.issues == []
    assert gh.rate_remaining == remaining
    assert standin.requests[-1]["status"] == 304 and standin.requests[-1]["if_none_match"] == first.etag
    standin.label("octo/sample", 1, "bug", actor="alice")  # any change of the listing
    assert not gh.issues_labelled(full_name="octo/sample", label="rpi-auto", etag=first.etag).not_modified


def test_a_listing_of_several_pages_is_followed_and_keeps_no_etag(standin):  # noqa: F811
    small = GitHubStandIn(token=TOKEN, page_size_cap=2).start()
    try:
        small.add_repo("octo/sample")
        for n in range(1, 6):
            small.add_issue("octo/sample", number=n, labels=("rpi-auto",))
        listing = GitHubClient(base_url=small.url, token=TOKEN).issues_labelled(full_name="octo/sample", label="rpi-auto")
        assert sorted(i["number"] for i in listing.issues) == [1, 2, 3, 4, 5]
        assert listing.etag == ""  # page 1's ETag does not cover page 2
    finally:
        small.stop()


def test_the_latest_labeled_event_of_the_trigger_label_is_found(gh, standin):  # noqa: F811
    standin.add_issue("octo/sample", number=7, labels=("rpi-auto",), labeled_by="alice")
    standin.unlabel("octo/sample", 7, "rpi-auto", actor="alice")
    standin.label("octo/sample", 7, "bug", actor="rita")
    standin.label("octo/sample", 7, "RPI-Auto", actor="tom")
    event = gh.latest_label_event(full_name="octo/sample", number=7, label="rpi-auto")
    assert event["actor"]["login"] == "tom" and event["event"] == "labeled"


def test_permissions_come_from_the_collaborator_endpoint(gh, standin):  # noqa: F811
    assert gh.collaborator_permission(full_name="octo/sample", login="mo") == "maintain"
    assert gh.collaborator_permission(full_name="octo/sample", login="tom") == "triage"
    assert gh.collaborator_permission(full_name="octo/sample", login="stranger") == "read"
    # GitHub answers 404 for a user it does not know (or a repository we cannot see): no access.
    assert gh.collaborator_permission(full_name="octo/missing", login="mo") == "none"


def test_comments_are_created_and_edited_in_place(gh, standin):  # noqa: F811
    standin.add_issue("octo/sample", number=1)
    created = gh.issue_comment_create(full_name="octo/sample", number=1, body="first")
    gh.issue_comment_update(full_name="octo/sample", comment_id=created["id"], body="second")
    (comment,) = standin.comments_on("octo/sample", 1)
    assert comment["history"] == ["first", "second"]
    assert [c["body"] for c in gh.issue_comments(full_name="octo/sample", number=1)] == ["second"]


def test_a_pull_request_for_an_existing_branch_is_updated_not_opened_twice(gh, standin):  # noqa: F811
    first = gh.pull_request_open_or_update(full_name="octo/sample", head="tacx/1-x", base="main", title="T", body="Closes #1", draft=True)
    second = gh.pull_request_open_or_update(full_name="octo/sample", head="tacx/1-x", base="main", title="T2", body="Closes #1\n\nmore", draft=True)
    assert first["number"] == second["number"]
    (pull,) = standin.pulls_of("octo/sample")
    assert pull["draft"] is True and pull["title"] == "T2" and len(pull["history"]) == 2


def test_a_pull_request_opened_by_a_lost_attempt_is_updated_after_githubs_422(gh, standin, monkeypatch):  # noqa: F811
    gh.pull_request_open_or_update(full_name="octo/sample", head="tacx/2-y", base="main", title="T", body="b", draft=False)
    real = gh.pull_requests_open
    calls = []

    def stale_listing(**kwargs):
        calls.append(1)
        return [] if len(calls) == 1 else real(**kwargs)  # a listing that lags behind

    monkeypatch.setattr(gh, "pull_requests_open", stale_listing)
    pr = gh.pull_request_open_or_update(full_name="octo/sample", head="tacx/2-y", base="main", title="T3", body="b3", draft=False)
    assert pr["title"] == "T3" and len(standin.pulls_of("octo/sample")) == 1


def test_a_secondary_rate_limit_carries_retry_after(gh, standin):  # noqa: F811
    standin.fail_next("GET", r"/issues$", status=403, headers={"Retry-After": "42"})
    with pytest.raises(GitHubError) as err:
        gh.issues_labelled(full_name="octo/sample", label="rpi-auto")
    assert err.value.retry_after == 42 and not err.value.permanent


def test_a_secondary_rate_limit_without_retry_after_waits_a_minute(gh, standin):  # noqa: F811
    standin.fail_next("GET", r"/issues$", status=403)
    with pytest.raises(GitHubError) as err:
        gh.issues_labelled(full_name="octo/sample", label="rpi-auto")
    assert err.value.retry_after == 60


def test_an_exhausted_primary_limit_stops_requests_until_the_reset(gh, standin):  # noqa: F811
    standin.rate_remaining = 1
    gh.issues_labelled(full_name="octo/sample", label="rpi-auto")
    assert gh.rate_remaining == 0
    count = len(standin.requests)
    with pytest.raises(GitHubError) as err:
        gh.issues_labelled(full_name="octo/sample", label="rpi-auto")
    assert err.value.retry_after and err.value.retry_after > 0
    assert len(standin.requests) == count  # not even asked


def test_a_bad_token_is_a_permanent_error(standin):  # noqa: F811
    with pytest.raises(GitHubError) as err:
        GitHubClient(base_url=standin.url, token="wrong").issues_labelled(full_name="octo/sample", label="x")
    assert err.value.status == 401 and err.value.permanent


def test_it_never_follows_a_link_to_another_host(gh):
    with pytest.raises(GitHubError):
        gh.request("GET", "https://evil.example/repos/octo/sample/issues?page=2")
