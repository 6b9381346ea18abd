"""GitHub's edges, against the stand-in behaving like GitHub: check runs (of a commit and of a
suite) and combined statuses over more than one page, and the job-log download on another host,
which must get no Authorization header."""

from __future__ import annotations

import pytest
from github_standin import TOKEN, standin  # noqa: F401

from pipeline.github import GitHubClient

SHA = "a" * 40


@pytest.fixture
def gh(standin):  # noqa: F811
    return GitHubClient(base_url=standin.url, token=TOKEN)


def test_check_runs_of_a_commit_and_of_a_suite_are_read_over_every_page(gh, standin):  # noqa: F811
    for i in range(230):
        standin.add_check_run("octo/sample", SHA, name=f"job {i}", conclusion="success" if i != 222 else "failure", suite=77 if i % 2 else 78)
    runs = gh.check_runs(full_name="octo/sample", sha=SHA)
    assert len(runs) == 230 and len({r["id"] for r in runs}) == 230
    assert [r["name"] for r in runs if r["conclusion"] == "failure"] == ["job 222"]  # on the third page
    pages = standin.requests_to("GET", rf"/commits/{SHA}/check-runs$")
    assert [r["query"].get("page", "1") for r in pages] == ["1", "2", "3"] and all(r["query"]["per_page"] == "100" for r in pages)
    assert len(gh.check_runs_for_ref(full_name="octo/sample", ref=SHA)) == 230
    suite = gh.check_runs_for_suite(full_name="octo/sample", check_suite_id=77)
    assert len(suite) == 115 and {r["check_suite"]["id"] for r in suite} == {77}
    assert len(standin.requests_to("GET", r"/check-suites/77/check-runs$")) == 2


def test_the_combined_status_is_read_over_every_page(gh, standin):  # noqa: F811
    for i in range(140):
        gh.commit_status_create(full_name="octo/sample", sha=SHA, state="success", context=f"ci/{i}")
    gh.commit_status_create(full_name="octo/sample", sha=SHA, state="failure", context="ci/late", description="broke")
    combined = gh.combined_status(full_name="octo/sample", sha=SHA)
    assert combined["state"] == "failure" and combined["total_count"] == 141
    assert len(combined["statuses"]) == 141 and combined["statuses"][-1]["context"] == "ci/late"  # page 2
    pages = standin.requests_to("GET", rf"/commits/{SHA}/status$")
    assert len(pages) == 2 and pages[0]["query"]["per_page"] == "100" and pages[1]["query"]["page"] == "2"


def test_the_job_log_download_on_another_host_carries_no_authorization(gh, standin):  # noqa: F811
    run = standin.add_check_run("octo/sample", SHA, name="tests", log="line 1\nline 2\nFAILED test_x - assert 1 == 2\n")
    assert gh.job_log_tail(full_name="octo/sample", job_id=run["id"]) == "line 1\nline 2\nFAILED test_x - assert 1 == 2"
    (api,) = standin.requests_to("GET", rf"/actions/jobs/{run['id']}/logs$")
    assert api["status"] == 302 and api["authorization"] == f"Bearer {TOKEN}"
    (download,) = standin.requests_to("GET", rf"^/_blob/job-logs/{run['id']}$")
    assert download["host"] == standin.blob_url.removeprefix("http://") and download["host"].startswith("127.0.0.2:")
    assert download["authorization"] == "" and download["status"] == 200
    # No log (expired or never kept): an empty tail, not an error.
    assert gh.job_log_tail(full_name="octo/sample", job_id=99999) == ""
