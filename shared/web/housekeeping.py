"""Housekeeping: delete what the servers leave behind under ``data/``, by rules with limits.

One entry point, :func:`run`, used three ways: the ``flask housekeeping`` command
(registered on all three apps by :func:`install`), a background thread of the main
server every ``HOUSEKEEPING_EVERY_S`` seconds (:func:`start_schedule`), and the tests.
Each rule takes its limit from the app's configuration (``shared.core.config.DEFAULTS``;
``KOL_<NAME>`` in the environment):

============================  ====================================================================
rule                          what is deleted
============================  ====================================================================
predictions                   ``predictions/<run>/`` result folders (annotated photos, thumbnails,
                              CSVs) last changed more than ``PREDICTION_MAX_AGE_S`` seconds ago
videos                        :func:`shared.video.videos.sweep`: beyond the newest ``VIDEO_KEEP``, or older
                              than ``VIDEO_MAX_AGE_S`` seconds; never a video being streamed
unfinished jobs               :meth:`shared.training.jobs.JobStore.sweep_incomplete`: job folders whose upload
                              never completed, older than ``JOB_INCOMPLETE_MAX_AGE_S`` seconds
old jobs                      job folders whose ``state.json`` was last written more than
                              ``JOB_MAX_AGE_DAYS`` days ago (a running step rewrites it as it
                              progresses, so only finished or abandoned jobs are that old)
model versions                ``models/<version>/`` folders beyond the newest ``MODEL_VERSIONS_KEEP``
                              (by version name, which starts with its UTC time); never the version
                              named by ``models/current``
library                       media kept in the library (:meth:`shared.library.store.Library.sweep`: files,
                              faces and their index entries) more than ``LIBRARY_RETENTION_DAYS`` days
                              ago; 0 (the default) keeps them until someone deletes them
temporary files               :func:`sweep_temp_files`: the ``.tmp-*`` files of atomic writes killed
                              mid-write (:mod:`shared.core.storage`) under ``models/``, ``pool/``,
                              ``jobs/``, ``predictions/``, ``videos/`` and ``library/``, once older than
                              :data:`TEMP_MAX_AGE_S` (a fixed hour: a write in progress takes seconds)
============================  ====================================================================

Every rule only looks at folders (or, for temporary files, file names) that match its strict
pattern, so nothing else under ``data/`` is ever touched, and a limit of 0 turns that limit off.
"""
import logging
import shutil
import threading
import time
from pathlib import Path

from shared.core.ids import JOB_ID_RE
from shared.core.storage import changed_at, locked, sweep_temp_files
from shared.recognition.predict import sweep_predictions
from shared.recognition.store import ModelStore
from shared.training.jobs import JobStore
from shared.video import videos

#: Settings read by :func:`run`, in the order of the rules.
SETTINGS = ("PREDICTION_MAX_AGE_S", "VIDEO_KEEP", "VIDEO_MAX_AGE_S", "JOB_INCOMPLETE_MAX_AGE_S",
            "JOB_MAX_AGE_DAYS", "MODEL_VERSIONS_KEEP", "LIBRARY_RETENTION_DAYS", "LIBRARY_DB_URL")
#: The folders of ``data/`` whose temporary files :func:`run` sweeps (not ``instance/``: accounts).
TEMP_FOLDERS = ("models", "pool", "jobs", "predictions", "videos", "library")

log = logging.getLogger(__name__)


def sweep_old_jobs(root, max_age_days, now=None):
    """Delete job folders under ``root`` (``data/jobs``) whose ``state.json`` was last written more
    than ``max_age_days`` days ago. Returns the job ids deleted, sorted. ``max_age_days`` 0: keep all."""
    root, now = Path(root), time.time() if now is None else now
    if not max_age_days or not root.is_dir():
        return []
    deleted = []
    for entry in root.iterdir():
        mtime = changed_at(entry / "state.json")
        if JOB_ID_RE.match(entry.name) and mtime is not None and now - mtime > max_age_days * 86400:
            shutil.rmtree(entry, ignore_errors=True)
            deleted.append(entry.name)
    return sorted(deleted)


def prune_models(root, keep):
    """Delete all model versions under ``root`` (``data/models``) but the newest ``keep``, never the
    current one (:meth:`shared.recognition.store.ModelStore.prune`). ``keep`` 0: none. Returns the versions
    deleted, oldest first."""
    if not keep or not Path(root).is_dir():
        return []
    return ModelStore(root).prune(keep)


def sweep_library(data_dir, retention_days, db_url="", now=None):
    """Delete library media kept more than ``retention_days`` days ago (0: none; the library is not
    even opened), and their faces from the unknown inbox. Returns their media ids, sorted."""
    if not retention_days:
        return []
    from shared.library.store import Library
    from shared.library.unknowns import Inbox

    gone = Library(data_dir, db_url).sweep(retention_days, now=now)
    inbox = Inbox(data_dir)
    for media_id in gone:
        inbox.forget_media(media_id)
    return gone


def run(data_dir, config, now=None):
    """Apply every rule to ``data_dir`` with the limits in ``config`` (a mapping holding
    :data:`SETTINGS`). Returns ``{rule: [ids deleted]}`` for the seven rules (temporary files:
    their paths under ``data_dir``)."""
    data_dir = Path(data_dir)
    jobs = JobStore(data_dir / "jobs")
    predictions = sweep_predictions(data_dir / "predictions", config["PREDICTION_MAX_AGE_S"], now=now)
    swept_videos = sorted(videos.sweep(data_dir / "videos", keep=config["VIDEO_KEEP"],
                                       max_age_s=config["VIDEO_MAX_AGE_S"], now=now))
    old_jobs = sweep_old_jobs(data_dir / "jobs", config["JOB_MAX_AGE_DAYS"], now=now)
    library = sweep_library(data_dir, config.get("LIBRARY_RETENTION_DAYS", 0), config.get("LIBRARY_DB_URL", ""), now=now)
    before = _job_ids(jobs.root)
    jobs.sweep_incomplete(older_than_s=config["JOB_INCOMPLETE_MAX_AGE_S"])
    unfinished = sorted(before - _job_ids(jobs.root) - set(old_jobs))
    # after the folder rules (deleting a file refreshes its folder's time), before pruning (which sweeps models/)
    temporary = sorted(f"{name}/{path}" for name in TEMP_FOLDERS for path in sweep_temp_files(data_dir / name, now=now))
    return {"predictions": predictions, "videos": swept_videos, "unfinished_jobs": unfinished, "old_jobs": old_jobs,
            "model_versions": prune_models(data_dir / "models", config["MODEL_VERSIONS_KEEP"]),
            "library": library, "temporary_files": temporary}


def _job_ids(root):
    return {e.name for e in Path(root).iterdir()} if Path(root).is_dir() else set()


def install(app):
    """Register ``flask housekeeping`` on ``app`` (it prints what it deleted, one line per rule)."""
    import click

    @app.cli.command("housekeeping")
    def housekeeping_command():
        """Delete old predictions, videos, job folders, model versions and leftover temporary files
        (limits: KOL_* settings)."""
        result = run(app.config["DATA_DIR"], app.config)
        for rule, ids in result.items():
            click.echo(f"{rule}: {len(ids)} deleted" + (f" ({', '.join(ids)})" if ids else ""))


def start_schedule(app):
    """Run :func:`run` every ``HOUSEKEEPING_EVERY_S`` seconds from a daemon thread, the first time a
    minute after the start (at most); not when testing, nor when the setting is 0. Several processes may run it: an exclusive lock file makes one
    pass at a time, and the rules do nothing the second time."""
    every = app.config["HOUSEKEEPING_EVERY_S"]
    if app.testing or not every:
        return None
    data_dir = app.config["DATA_DIR"]
    config = {key: app.config[key] for key in SETTINGS}

    def loop():
        time.sleep(min(every, 60))  # not during the start (nor under a one-off `flask` command)
        while True:
            try:
                with locked(Path(data_dir) / "instance" / "housekeeping.lock"):
                    result = run(data_dir, config)
                if any(result.values()):
                    log.info("housekeeping deleted %s", {k: len(v) for k, v in result.items()})
            except Exception:  # noqa: BLE001 - a failed pass is logged and retried next time
                log.exception("housekeeping failed")
            time.sleep(every)

    thread = threading.Thread(target=loop, name="housekeeping", daemon=True)
    thread.start()
    return thread
