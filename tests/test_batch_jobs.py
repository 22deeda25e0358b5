"""Photo batches whose server process dies, and how many batches one user runs at once (shared/recognition/batch.py).

The batch work runs in a real child process (tests/_batch_child.py: the same staging and
background run as the batch route), which the tests SIGKILL as a gunicorn worker dies; the
pages and the progress route are the real main server app on the same data folder (and, for
the progress page's own polling, the main server under gunicorn in a real Chromium). The
staleness is made short with the ``BATCH_STALE_S`` setting instead of waiting the real minute.
"""
import io
import os
import subprocess
import sys
import time

import pytest

from shared.recognition.predict import ResultFolders
from shared.core import owners
from shared.core.storage import atomic_write_json, read_json

from . import _synth
from .conftest import FIVE, needs_data, screenshot, signed_in
from .servers import ROOT, LiveServers, kill_tree, wait_for

JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html"}
#: How the audit trail (and so a batch's progress.json) names ``signed_in(app.test_client(), "member")``:
#: the API token conftest.app_token makes, called "tests-member".
STOPPED = ("This batch stopped because the server process running it ended; the photos already named "
           "are below; run the rest again.")
NOT_REACHED = "Not named: the batch stopped before this photo; run it again."
TOO_MANY = "You already have 2 batches running; wait for one to finish, then send this one again."


@pytest.fixture
def children(tmp_path):
    """``start(*args)``: a ``python -m tests._batch_child *args`` process (its output in tmp_path);
    whatever is still running at the end is killed."""
    procs = []

    def start(*args):
        log_path = tmp_path / f"child-{len(procs)}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "tests._batch_child", *map(str, args)], cwd=ROOT,
                                    env=dict(os.environ, OPENBLAS_NUM_THREADS="1"),
                                    stdout=log, stderr=subprocess.STDOUT)
        proc.log_path = log_path
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            kill_tree(proc)


@pytest.fixture
def stale_servers(tmp_path, redis_url, monkeypatch):
    """The main server under gunicorn with ``KOL_BATCH_STALE_S=20``: a batch whose process is
    gone is shown as stopped after 20 s, while a live one (a heartbeat every 5 s) never is."""
    monkeypatch.setenv("KOL_BATCH_STALE_S", "20")
    servers = LiveServers(tmp_path / "data", tmp_path, names=("main",), redis_url=redis_url)
    yield servers
    servers.stop()


def notes():
    """A batch upload with one file that is not a photo (a row with its error; no face work)."""
    return {"file": [(io.BytesIO(b"not a photo"), "notes.txt")]}


def held_batch(data_dir, children):
    """``(run, folder, child)``: a two-photo batch of an admin (no owner record) in a child process, which
    names the first photo and then waits at the gate (a FIFO) before the second one, until killed."""
    _synth.synthetic_model(data_dir)
    run, folder = ResultFolders(data_dir / "predictions").new()
    child = children("photos", folder, data_dir, FIVE / "elton_john" / "val_1.jpg")
    wait_for("the first photo to be named",
             lambda: (read_json(folder / "progress.json") or {}).get("done") == 1 or child.poll() is not None)
    assert child.poll() is None, child.log_path.read_text()[-2000:]
    return run, folder, child


@needs_data
def test_a_batch_whose_process_was_killed_says_so_and_keeps_the_photos_it_named(main_app, data_dir, children):
    main_app.config["BATCH_STALE_S"] = 1
    run, folder, child = held_batch(data_dir, children)
    kill_tree(child)  # SIGKILL: the process and its face workers, mid-batch

    client = signed_in(main_app.test_client(), "admin")
    url = f"/predictBatch/{run}"
    state = wait_for("the batch to be shown as failed",
                     lambda: (s := client.get(url + "/progress").get_json())["state"] != "running" and s, 60)
    assert state == {"state": "failed", "done": 1, "total": 2, "error": STOPPED}

    body = client.get(url, headers=JSON).get_json()
    assert body["error"] == STOPPED and body["model_version"]
    first, second = body["results"]
    assert first["filename"] == "first-val_1.jpg" and first["faces"] and first["error"] is None
    assert second["filename"] == "second-val_1.jpg" and second["faces"] == [] and second["error"] == NOT_REACHED
    page = client.get(url, headers=HTML).get_data(True)
    assert STOPPED in page and NOT_REACHED in page and "Download CSV" in page
    assert page.count('class="batch-thumb"') == 1
    csv_text = client.get(f"/predictions/{run}/results.csv").get_data(True)
    assert "first-val_1.jpg" in csv_text and NOT_REACHED in csv_text
    assert not (folder / "uploads").exists()  # the staged photos of a dead batch are not kept


def test_one_user_runs_at_most_two_batches_at_once(main_app, data_dir, children):
    _synth.synthetic_model(data_dir)
    member, admin = signed_in(main_app.test_client(), "member"), signed_in(main_app.test_client(), "admin")
    for _ in range(2):  # finished batches do not count
        assert member.post("/predictBatchImage", data=notes(), headers=JSON).status_code == 200
    results = ResultFolders(data_dir / "predictions")
    # the member, as its finished batches recorded it (the predictions folder also holds the batches' lock file)
    owner = next(owners.read(p) for p in sorted(results.root.iterdir()) if (p / owners.OWNER_FILE).is_file())
    held = []
    for _ in range(2):  # two running batches of the member, in processes of their own
        run, folder = results.new()
        atomic_write_json(folder / owners.OWNER_FILE, owner)
        held.append((children("hold", folder, owner["actor"]), folder / "progress.json", run))
    for proc, progress, run in held:
        wait_for("a held batch to start", lambda: progress.is_file() or proc.poll() is not None)
        assert proc.poll() is None, proc.log_path.read_text()[-2000:]
        assert member.get(f"/predictBatch/{run}/progress").get_json()["state"] == "running"  # alive

    before = sorted(os.listdir(results.root))
    r = member.post("/predictBatchImage", data=notes(), headers=JSON)
    assert r.status_code == 429 and r.get_json() == {"error": TOO_MANY}
    page = member.post("/predictBatchImage", data=notes(), headers=HTML)
    assert page.status_code == 429 and TOO_MANY in page.get_data(True)
    assert sorted(os.listdir(results.root)) == before  # nothing of the refused batches was kept
    assert admin.post("/predictBatchImage", data=notes(), headers=JSON).status_code == 200  # per user

    for proc, _, _ in held:
        kill_tree(proc)
    main_app.config["BATCH_STALE_S"] = 1  # batches without a heartbeat for 1 s are no longer running
    r = wait_for("the dead batches to stop counting",
                 lambda: (x := member.post("/predictBatchImage", data=notes(), headers=JSON)).status_code != 429 and x,
                 60)
    assert r.status_code == 200 and r.get_json()["results"][0]["filename"] == "notes.txt"


def test_a_batch_left_running_by_an_older_version_is_shown_as_stopped(main_app, data_dir):
    """progress.json as the thread of the version before heartbeats left it when its process died."""
    run, folder = ResultFolders(data_dir / "predictions").new()
    progress = folder / "progress.json"
    progress.write_text('{"state": "running", "done": 3, "total": 30, "error": null}')
    client = signed_in(main_app.test_client(), "admin")
    assert client.get(f"/predictBatch/{run}/progress").get_json()["state"] == "running"  # written just now
    an_hour_ago = time.time() - 3600
    os.utime(progress, (an_hour_ago, an_hour_ago))
    state = client.get(f"/predictBatch/{run}/progress").get_json()
    assert state == {"state": "failed", "done": 3, "total": 30, "error": STOPPED}
    page = client.get(f"/predictBatch/{run}", headers=HTML)
    assert page.status_code == 200 and STOPPED in page.get_data(True)


@needs_data
@pytest.mark.live
@pytest.mark.browser
def test_the_progress_page_says_when_a_batch_stopped_and_leads_to_what_it_named(stale_servers, page, children):
    data_dir, main = stale_servers.data_dir, stale_servers.urls["main"]
    run, folder, child = held_batch(data_dir, children)
    page.goto(f"{main}/predictBatch/{run}")
    assert "1 of 2 photos" in page.inner_text("#progress")
    link = page.locator("#progress a", has_text="See the photos it named")
    assert not link.is_visible()
    kill_tree(child)
    link.wait_for(state="visible", timeout=120_000)  # the page polls; 20 s without a heartbeat
    assert STOPPED in page.inner_text("#progress") and not page.locator("#progress .hint").is_visible()
    screenshot(page, "batch-stopped-progress")
    with page.expect_navigation():
        link.click()
    assert STOPPED in page.inner_text("#batch-error")
    assert page.locator("img.batch-thumb").count() == 1 and NOT_REACHED in page.inner_text("main")
    assert page.errors == []
