"""The Training jobs page (process server ``/``) in plain words first (issue 25): "2 jobs running,
ready in about 1 min" from the progress the steps already record; the queue's internals (queue
names, workers, RQ ids) behind a details toggle for admins.

:func:`shared.training.jobqueue.status.at_a_glance` is read on step records as the queue reports
them; the page is read from the real app on a real redis-server, with no worker (work stays queued).
"""
from datetime import datetime, timedelta, timezone

import pytest

from shared.training.jobqueue import connection, enqueue, status
from shared.training.jobs import JobStore

from . import _synth
from .conftest import _config, signed_in

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=timezone.utc)


def job(step, state, done=0, total=0, started_s_ago=None):
    """A job record as :func:`status.live_state` gives it, with one step in ``state`` (queued ``started_s_ago``)."""
    started = (NOW - timedelta(seconds=started_s_ago)).isoformat(timespec="seconds") if started_s_ago else None
    return {"job": "0" * 16, "steps": {step: {"state": state, "done": done, "total": total, "started": started}}}


def glance(states, workers=1):
    return status.at_a_glance(states, workers, now=NOW.timestamp())


def test_two_running_jobs_say_when_they_will_be_ready():
    # half of the align done in 30 s, a quarter of the training in 10 s: 30 s left at most
    now = glance([job("align", "running", 60, 120, 30), job("train", "running", 1, 4, 10)])
    assert now == {"running": 2, "waiting": 0, "ready_in_s": 30,
                   "sentence": "2 jobs running, ready in about 1 min."}
    assert glance([job("align", "running", 10, 120, 60)])["sentence"] == "1 job running, ready in about 11 min."
    assert glance([job("align", "running", 1, 1000, 60)])["sentence"] == "1 job running, ready in about 17 h."


def test_the_pace_leaves_out_the_wait_for_a_worker():
    # queued 100 s ago, taken by a worker 10 s ago, half done since: 10 s left, not 100
    waited = job("align", "running", 60, 120, 100)
    waited["steps"]["align"]["began"] = NOW.timestamp() - 10
    assert glance([waited])["ready_in_s"] == 10
    assert glance([job("align", "running", 60, 120, 100)])["ready_in_s"] == 100  # no "began": from the queueing


def test_no_pace_yet_no_guess():
    now = glance([job("align", "running", 60, 120, 30), job("clean", "running", 0, 8, 5)])
    assert now["ready_in_s"] is None
    assert now["sentence"] == "2 jobs running; the time left shows once the first part is done."


def test_waiting_and_idle_jobs():
    done = job("clean", "done", 8, 8, 100)
    assert glance([done]) == {"running": 0, "waiting": 0, "ready_in_s": None,
                              "sentence": "No training work is running."}
    assert glance([done, job("train", "queued")])["sentence"] == "1 job waiting for a worker."
    assert glance([job("train", "queued")], workers=0)["sentence"] == (
        "1 job waiting for a worker; no worker is running, so nothing will start until one is started.")
    both = glance([job("align", "running", 60, 120, 30), job("train", "queued")])
    assert both["sentence"] == "1 job running, ready in about 1 min; 1 waiting for a worker."


@pytest.fixture
def app_without_worker(data_dir, redis_url):
    """The process server on a real Redis database that no worker reads: queued work stays queued."""
    from process_server import create_app

    return create_app(_config(data_dir, redis_url))


def test_the_page_says_the_state_first_and_keeps_the_queue_behind_details(app_without_worker, data_dir, redis_url):
    client = signed_in(app_without_worker.test_client(), "admin")
    page = client.get("/", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert "No training work is running." in page

    store = JobStore(data_dir / "jobs")
    job_id = _synth.aligned_job(data_dir, kols=("Ann", "Bob"), per_kol=3)
    enqueue.start_step(connection.connect(redis_url), store, job_id, "clean", {"remove": [], "keep": []})
    body = client.get("/", headers={"Accept": "application/json"}).get_json()
    assert body["now"]["waiting"] == 1 and body["now"]["running"] == 0
    assert body["now"]["sentence"] == ("1 job waiting for a worker; no worker is running, "
                                       "so nothing will start until one is started.")
    assert body["jobs"][0]["working"] == {"step": "clean", "state": "queued", "done": 0, "total": 0}

    page = client.get("/", headers={"Accept": "text/html"}).get_data(as_text=True)
    sentence = page.index("1 job waiting for a worker")
    details = page.index('<details class="card" id="queue">')
    assert sentence < details  # the plain words first
    assert page.index("<summary>", details) < page.index("<th>Queue</th>", details) < page.index("</details>")
    assert "Clean faces: waiting" in page  # the job's row in words, not "running"
