"""Housekeeping (shared/web/housekeeping.py): each rule deletes exactly what is past its limit, on real
folders with real modification times; `flask housekeeping` reads its limits from the environment;
the schedule runs the same rules."""
import io
import json
import os
import time
import zipfile

from flask import Flask

from shared.web import housekeeping
from shared.core.config import DEFAULTS

from .conftest import VIDEO, needs_video, signed_in

DAY = 86400
NOW = time.time()


def aged(path, age_s):
    """Set ``path``'s modification time to ``age_s`` seconds before NOW; returns ``path``."""
    os.utime(path, (NOW - age_s, NOW - age_s))
    return path


def limits(**overrides):
    return {key: DEFAULTS[key] for key in housekeeping.SETTINGS} | overrides


def make_run(data_dir, name, age_s):
    folder = data_dir / "predictions" / name
    folder.mkdir(parents=True)
    (folder / "annotated.jpg").write_bytes(b"x")
    return aged(folder, age_s)


def make_video(data_dir, vid, age_s, state="done"):
    folder = data_dir / "videos" / vid
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"video": vid}))
    aged(folder / "meta.json", age_s)
    (folder / "status.json").write_text(json.dumps({"state": state}))
    aged(folder / "status.json", 0 if state == "streaming" else age_s)
    return folder


def make_job(data_dir, job, age_s, finished=True):
    folder = data_dir / "jobs" / job
    folder.mkdir(parents=True)
    if finished:
        (folder / "state.json").write_text("{}")
        aged(folder / "state.json", age_s)
    return aged(folder, age_s)


def make_version(data_dir, version):
    folder = data_dir / "models" / version
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text("{}")
    (folder / "model.npz").write_bytes(b"")  # only its presence counts here
    return folder


def test_predictions_older_than_the_limit_go(tmp_path):
    old = make_run(tmp_path, "a" * 32, 2 * DAY)
    new = make_run(tmp_path, "b" * 32, 3600)
    other = make_run(tmp_path, "not-a-run", 9 * DAY)  # a name the rule does not own
    out = housekeeping.run(tmp_path, limits(PREDICTION_MAX_AGE_S=DAY), now=NOW)
    assert out["predictions"] == ["a" * 32]
    assert not old.exists() and new.exists() and other.exists()
    # the limit is the setting's, not a constant: 30 minutes takes the second one too
    assert housekeeping.run(tmp_path, limits(PREDICTION_MAX_AGE_S=1800), now=NOW)["predictions"] == ["b" * 32]
    # 0 turns the rule off
    make_run(tmp_path, "c" * 32, 99 * DAY)
    assert housekeeping.run(tmp_path, limits(PREDICTION_MAX_AGE_S=0), now=NOW)["predictions"] == []


def test_videos_beyond_the_newest_n_or_too_old_go_but_never_one_playing(tmp_path):
    ids = [f"{i:016x}" for i in range(5)]
    for rank, vid in enumerate(ids):  # ids[0] newest ... ids[4] oldest
        make_video(tmp_path, vid, 60 * (rank + 1))
    playing = make_video(tmp_path, "f" * 16, 10 * DAY, state="streaming")
    out = housekeeping.run(tmp_path, limits(VIDEO_KEEP=3, VIDEO_MAX_AGE_S=DAY), now=NOW)
    assert out["videos"] == sorted(ids[3:])
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == sorted(ids[:3] + ["f" * 16])
    assert playing.exists()
    out = housekeeping.run(tmp_path, limits(VIDEO_KEEP=20, VIDEO_MAX_AGE_S=90), now=NOW)
    assert out["videos"] == sorted(ids[1:3])  # older than 90 s


def test_unfinished_and_old_jobs(tmp_path):
    cut_off = make_job(tmp_path, "1" * 16, 7 * 3600, finished=False)   # upload never completed, 7 h ago
    uploading = make_job(tmp_path, "2" * 16, 60, finished=False)       # an upload in progress
    ancient = make_job(tmp_path, "3" * 16, 31 * DAY)                   # finished a month ago
    recent = make_job(tmp_path, "4" * 16, 2 * DAY)
    stray = make_job(tmp_path, "notajob", 99 * DAY)
    out = housekeeping.run(tmp_path, limits(JOB_INCOMPLETE_MAX_AGE_S=6 * 3600, JOB_MAX_AGE_DAYS=30), now=NOW)
    assert out["unfinished_jobs"] == ["1" * 16] and out["old_jobs"] == ["3" * 16]
    assert not cut_off.exists() and not ancient.exists()
    assert uploading.exists() and recent.exists() and stray.exists()
    assert housekeeping.run(tmp_path, limits(JOB_MAX_AGE_DAYS=1), now=NOW)["old_jobs"] == ["4" * 16]


def test_model_versions_keep_the_newest_n_and_never_the_current(tmp_path):
    versions = [f"2026112{d}-120000-abcdef" for d in range(6)]  # oldest first
    for v in versions:
        make_version(tmp_path, v)
    (tmp_path / "models" / "current").write_text(versions[1])  # switched back to an old one
    (tmp_path / "models" / "notes").mkdir()
    out = housekeeping.run(tmp_path, limits(MODEL_VERSIONS_KEEP=2), now=NOW)
    assert out["model_versions"] == [versions[0], *versions[2:4]]
    left = sorted(p.name for p in (tmp_path / "models").iterdir())
    assert left == sorted([versions[1], *versions[4:], "current", "notes", ".lock"])
    assert housekeeping.run(tmp_path, limits(MODEL_VERSIONS_KEEP=1), now=NOW)["model_versions"] == [versions[4]]
    assert housekeeping.run(tmp_path, limits(MODEL_VERSIONS_KEEP=0), now=NOW)["model_versions"] == []


def test_flask_housekeeping_command_reads_its_limits_from_the_environment(tmp_path, monkeypatch):
    from process_server import create_app

    data_dir = tmp_path / "data"
    versions = [f"2026112{d}-120000-abcdef" for d in range(4)]
    for v in versions:
        make_version(data_dir, v)
    (data_dir / "models" / "current").write_text(versions[-1])
    make_run(data_dir, "a" * 32, 3 * 3600)
    monkeypatch.setenv("KOL_MODEL_VERSIONS_KEEP", "2")
    monkeypatch.setenv("KOL_PREDICTION_MAX_AGE_S", "7200")
    app = create_app({"DATA_DIR": str(data_dir), "SECRET_KEY": "t"})
    result = app.test_cli_runner().invoke(args=["housekeeping"])
    assert result.exit_code == 0, result.output
    assert f"model_versions: 2 deleted ({versions[0]}, {versions[1]})" in result.output
    assert "predictions: 1 deleted" in result.output and "videos: 0 deleted" in result.output
    assert sorted(p.name for p in (data_dir / "models").iterdir() if p.name[0].isdigit()) == versions[2:]
    assert not (data_dir / "predictions" / ("a" * 32)).exists()


def test_the_command_is_on_all_three_apps(tmp_path):
    from main_server import create_app as main_app
    from video_server import create_app as video_app

    for factory in (main_app, video_app):
        app = factory({"DATA_DIR": str(tmp_path / "d"), "SECRET_KEY": "t", "TESTING": True})
        assert "housekeeping" in app.cli.list_commands(None)


def test_the_schedule_runs_the_same_rules(tmp_path):
    app = Flask(__name__)
    app.config.update(limits(HOUSEKEEPING_EVERY_S=1, PREDICTION_MAX_AGE_S=60), DATA_DIR=str(tmp_path))
    old = make_run(tmp_path, "a" * 32, 3600)
    assert housekeeping.start_schedule(app) is not None
    deadline = time.monotonic() + 10
    while old.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not old.exists()
    later = make_run(tmp_path, "b" * 32, 3600)  # and again on the next tick
    deadline = time.monotonic() + 10
    while later.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not later.exists()
    # not while testing, nor with the setting at 0
    app.config["TESTING"] = True
    assert housekeeping.start_schedule(app) is None
    app.config.update(TESTING=False, HOUSEKEEPING_EVERY_S=0)
    assert housekeeping.start_schedule(app) is None


# -- issue 20: the settings reach every place that sweeps, and 0 turns them off there too -----------

def _main_app(data_dir, **settings):
    from main_server import create_app

    return create_app({"TESTING": True, "DATA_DIR": str(data_dir), "SECRET_KEY": "t", **settings})


def _save_a_model(data_dir):
    """A model of three synthetic embeddings of one KOL (enough for the batch route to start)."""
    import numpy as np

    from shared.recognition.model import train
    from shared.recognition.store import ModelStore

    X = np.random.default_rng(3).normal(0, 0.06, size=(3, 128))
    ModelStore(data_dir / "models").save(train(X, ["ann"] * 3, {"ann": "Ann"}))


def test_a_new_prediction_result_sweeps_old_ones_by_the_setting(tmp_path):
    for max_age_s, swept in ((0, False), (60, True)):
        data_dir = tmp_path / f"data-{max_age_s}"
        _save_a_model(data_dir)
        old = make_run(data_dir, "a" * 32, 2 * DAY)
        client = signed_in(_main_app(data_dir, PREDICTION_MAX_AGE_S=max_age_s).test_client(), "admin")
        r = client.post("/predictBatchImage", data={"file": (io.BytesIO(b"not a photo"), "notes.txt")},
                        headers={"Accept": "application/json"})  # a new result folder: the sweep runs
        assert r.status_code == 200, r.get_data(as_text=True)
        runs = [p.name for p in (data_dir / "predictions").iterdir() if p.is_dir()]  # not the batches' lock file
        assert len(runs) == (1 if swept else 2) and old.exists() is not swept, (max_age_s, runs)


def test_a_new_training_upload_sweeps_cut_off_uploads_by_the_setting(tmp_path):
    for max_age_s, swept in ((0, False), (60, True)):
        data_dir = tmp_path / f"data-{max_age_s}"
        cut_off = make_job(data_dir, "1" * 16, 2 * DAY, finished=False)
        client = signed_in(_main_app(data_dir, JOB_INCOMPLETE_MAX_AGE_S=max_age_s).test_client(), "admin")
        upload = io.BytesIO()
        with zipfile.ZipFile(upload, "w") as zf:
            zf.writestr("Ann/one.jpg", _jpeg())
        upload.seek(0)
        r = client.post("/trainByImage", data={"zip": (upload, "kols.zip")})
        assert r.status_code == 303, r.get_data(as_text=True)
        assert cut_off.exists() is not swept, max_age_s
        assert len(list((data_dir / "jobs").iterdir())) == (1 if swept else 2)


def _jpeg():
    from shared.faces import images
    import numpy as np

    return images.encode_jpeg(np.full((64, 64, 3), 128, np.uint8))


@needs_video
def test_a_video_upload_sweeps_old_videos_by_the_settings(tmp_path):
    clip = VIDEO / "short_hamilton_clip.mp4"
    cases = (({"VIDEO_KEEP": 0, "VIDEO_MAX_AGE_S": 0}, set()),    # both limits off: every video stays
             ({"VIDEO_KEEP": 0, "VIDEO_MAX_AGE_S": 3600}, {0, 1}),  # only the age limit: the two old ones go
             ({"VIDEO_KEEP": 3, "VIDEO_MAX_AGE_S": 0}, {0}))        # only the number: the newest two and the upload stay
    for n, (settings, gone) in enumerate(cases):
        data_dir = tmp_path / f"data-{n}"
        ages = (3 * DAY, 2 * DAY, 60)
        stored = [make_video(data_dir, f"{i:016x}", age) for i, age in enumerate(ages)]
        client = signed_in(_main_app(data_dir, **settings).test_client(), "admin")
        r = client.post("/predictVideoResult", data={"file": (io.BytesIO(clip.read_bytes()), clip.name)})
        assert r.status_code == 303, r.get_data(as_text=True)
        assert {i for i, folder in enumerate(stored) if not folder.exists()} == gone, settings
        assert len(list((data_dir / "videos").iterdir())) == 4 - len(gone)


# -- issue 20: temporary files of writes killed mid-write --------------------------------------------

KILLED_WRITE = """
import os, signal, sys
from pathlib import Path
from shared.core.storage import atomic_write

def write(fh):
    fh.write(b"half a model")
    fh.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # killed mid-write, as by the OOM killer or a power cut

atomic_write(Path(sys.argv[1]), write, suffix=".npz")
"""


def killed_write(path):
    """Run a real atomic write of ``path`` in a process that is SIGKILLed mid-write; returns the
    temporary file it left behind."""
    import signal
    import subprocess
    import sys

    from .servers import ROOT

    path.parent.mkdir(parents=True, exist_ok=True)
    before = set(path.parent.iterdir())
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITE, str(path)], cwd=ROOT, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    left = set(path.parent.iterdir()) - before
    assert len(left) == 1 and next(iter(left)).name.startswith(".tmp-"), left
    return left.pop()


def test_temporary_files_of_killed_writes_go_once_an_hour_old(tmp_path):
    version = "20261120-120000-abcdef"
    make_version(tmp_path, version)
    (tmp_path / "models" / "current").write_text(version)
    stale = [aged(killed_write(tmp_path / "models" / version / "model.npz"), 2 * 3600),
             aged(killed_write(tmp_path / "pool" / "ann" / "manifest.json"), 2 * 3600),
             aged(killed_write(tmp_path / "jobs" / ("4" * 16) / "state.json"), 2 * 3600)]
    writing = killed_write(tmp_path / "predictions" / ("a" * 32) / "results.json")  # as young as a write in progress
    kept = tmp_path / "pool" / "ann" / "tmp-not-ours.png"  # not a temporary file of ours: never touched
    kept.write_bytes(b"x")
    aged(kept, 2 * 3600)
    out = housekeeping.run(tmp_path, limits(), now=NOW)
    assert out["temporary_files"] == sorted(str(p.relative_to(tmp_path)) for p in stale)
    assert not any(p.exists() for p in stale) and writing.exists() and kept.exists()
    assert (tmp_path / "models" / version / "model.npz").exists()


def test_pruning_after_a_training_removes_what_a_killed_training_left(tmp_path):
    import numpy as np

    from shared.recognition.model import train
    from shared.recognition.store import ModelStore

    store = ModelStore(tmp_path / "models")
    version = store.save(train(np.random.default_rng(5).normal(0, 0.06, (3, 128)), ["ann"] * 3, {}))
    left = aged(killed_write(store.root / version / "model.npz"), 2 * 3600)  # a rewrite (forget) killed
    fresh = killed_write(store.root / "current")  # a write that may still be running
    assert store.prune(5) == [] and not left.exists() and fresh.exists()
    assert store.current().version == version
