"""Training jobs on disk, and the background runner that reports their progress.

A job is one uploaded training zip walking through the wizard's steps
(:data:`STEPS`: align, clean, import, train). Everything about it lives in
``data/jobs/<job id>/``::

    state.json      the job's state (below), replaced atomically on every change
    input/<k>/...   the photos or videos extracted from the zip (k = KOL index)
    chips/<k>/...   aligned chips (content-addressed PNG + cached .npy embedding)
    align.json ...  each step's detailed result, written atomically when it ends

``state.json``::

    {"job": id, "kind": "image"|"video", "created": iso time, "upload": original zip name,
     "kols": [{"name": display name, "files": [{"path": relative to the job folder, "name": name in the zip}]}],
     "skipped": [{"name", "reason"}],
     "steps": {step: {"state": "queued"|"running"|"done"|"failed", "done": int, "total": int,
                      "error": str|None, "started", "finished", "pid", "summary": {...}}},
     "stage": the step started last}

While a step runs (in a background thread, :meth:`JobStore.start`, or inside
the request for the quick ones, :meth:`JobStore.sync_step`), its worker holds an
exclusive ``flock`` on the job's ``.running`` file; the kernel drops it when the process ends, however it ends
(crash, kill, restart). A step that is "running" in the file while nobody holds
that lock is therefore reported as failed with the sentence :data:`INTERRUPTED`,
and can be run again. Zombie processes and reused pids cannot fool this.
"""
import contextlib
import fcntl
import logging
import os
import re
import secrets
import shutil
import threading
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from .errors import UserError
from .storage import DISK_FULL, atomic_write_json, is_disk_full, locked, read_json

JOB_ID_RE = re.compile(r"^[0-9a-f]{16}$")
STEPS = ("align", "clean", "import", "train")
#: A job folder without ``state.json`` older than this (seconds) is the leftover of a crashed upload.
INCOMPLETE_MAX_AGE_S = 6 * 3600
INTERRUPTED = ("This step was interrupted (the server stopped while it was running). "
               "Nothing was lost: run the step again.")

log = logging.getLogger(__name__)


def _now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _try_lock(path):
    """Open ``path`` and take its exclusive flock without waiting: the file object, or ``None`` if held."""
    fh = open(path, "a+b")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    return fh


class JobStore:
    """The jobs under ``root`` (normally ``data/jobs``)."""

    def __init__(self, root):
        self.root = Path(root)

    # -- creating -----------------------------------------------------------
    def create(self, save_upload, kind, upload_name):
        """Create a job from an uploaded zip.

        save_upload: a callable ``save_upload(path)`` writing the upload to ``path``
            (e.g. ``FileStorage.save``).
        kind: ``"image"`` or ``"video"``. upload_name: the zip's (secured) file name.

        Extracts the zip safely (:func:`shared.archive.extract_training_zip`),
        deletes the zip, writes ``state.json`` and returns the new job id.
        On any error nothing is left on disk and the error is raised again.
        """
        from .archive import extract_training_zip

        self.root.mkdir(parents=True, exist_ok=True)
        self.sweep_incomplete()
        job_id = secrets.token_hex(8)
        folder = self.root / job_id
        folder.mkdir()
        try:
            upload = folder / "upload.zip"
            save_upload(str(upload))
            extracted = extract_training_zip(upload, folder / "input", kind=kind)
            upload.unlink()
            kols = [{"name": k["name"],
                     "files": [{"path": str(Path(f["path"]).relative_to(folder)), "name": f["name"]}
                               for f in k["files"]]} for k in extracted.kols]
            state = {"job": job_id, "kind": kind, "created": _now(), "upload": upload_name,
                     "kols": kols, "skipped": extracted.skipped, "steps": {}, "stage": None}
            atomic_write_json(folder / "state.json", state)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return job_id

    def sweep_incomplete(self, older_than_s=INCOMPLETE_MAX_AGE_S):
        """Delete job folders that never got a ``state.json`` (an upload cut off by a crash or kill)
        once they are older than ``older_than_s`` seconds. Returns how many were deleted."""
        count, now = 0, time.time()
        for entry in self.root.iterdir() if self.root.is_dir() else ():
            try:
                if (JOB_ID_RE.match(entry.name) and entry.is_dir() and not (entry / "state.json").exists()
                        and now - entry.stat().st_mtime > older_than_s):
                    shutil.rmtree(entry, ignore_errors=True)
                    count += 1
            except FileNotFoundError:
                continue
        return count

    # -- reading ------------------------------------------------------------
    def folder(self, job_id):
        """The folder of an existing job; :class:`UserError` 404 for malformed or unknown ids."""
        if not isinstance(job_id, str) or not JOB_ID_RE.match(job_id):
            raise UserError("There is no training job with this id.", 404)
        folder = self.root / job_id
        if not (folder / "state.json").is_file():
            raise UserError("There is no training job with this id.", 404)
        return folder

    def state(self, job_id):
        """The job's state dict, with dead "running" steps reported as failed (interrupted)."""
        folder = self.folder(job_id)
        state = read_json(folder / "state.json")
        running = [step for step in state["steps"].values() if step.get("state") in ("running", "queued")]
        if running and not self._worker_alive(folder):
            for step in running:
                step.update(state="failed", error=INTERRUPTED, interrupted=True)
        return state

    @staticmethod
    def _worker_alive(folder):
        """True while some process holds the job's ``.running`` lock (a step is being worked on)."""
        fh = _try_lock(folder / ".running")
        if fh is None:
            return True
        fh.close()  # closing drops the lock
        return False

    def list(self):
        """States of every job, newest first."""
        out = []
        if self.root.is_dir():
            for entry in self.root.iterdir():
                if JOB_ID_RE.match(entry.name) and (entry / "state.json").is_file():
                    try:
                        out.append(self.state(entry.name))
                    except (UserError, ValueError, KeyError):
                        continue
        return sorted(out, key=lambda s: s.get("created") or "", reverse=True)

    def progress(self, job_id):
        """The contract's progress object for the job's current stage.

        ``{"job", "stage", "state": "queued|running|done|failed", "done", "total", "error"}``;
        a job where no step was started yet reports stage ``"align"``, state ``"queued"``.
        """
        state = self.state(job_id)
        stage = state.get("stage") or "align"
        step = state["steps"].get(stage) or {}
        return {"job": job_id, "stage": stage, "state": step.get("state", "queued"),
                "done": int(step.get("done", 0)), "total": int(step.get("total", 0)),
                "error": step.get("error")}

    def path(self, job_id, *parts):
        """A path inside the job's folder (the parts must be trusted, not user input)."""
        return self.folder(job_id).joinpath(*parts)

    def read(self, job_id, name, default=None):
        """A step's result file ``<name>.json`` (``default`` when it does not exist)."""
        return read_json(self.folder(job_id) / f"{name}.json", default=default)

    def write(self, job_id, name, obj):
        """Write a step's result file ``<name>.json`` atomically."""
        atomic_write_json(self.folder(job_id) / f"{name}.json", obj)

    # -- changing -----------------------------------------------------------
    def update(self, job_id, change):
        """Apply ``change(state)`` (mutates the dict) under the job's lock and save atomically."""
        folder = self.folder(job_id)
        with locked(folder / ".lock"):
            state = read_json(folder / "state.json")
            change(state)
            atomic_write_json(folder / "state.json", state)
            return state

    def set_step(self, job_id, step, **fields):
        """Merge ``fields`` into a step's record (and make it the current stage when it starts)."""
        def change(state):
            record = state["steps"].setdefault(step, {})
            record.update(fields)
            if fields.get("state") in ("queued", "running"):
                state["stage"] = step
        return self.update(job_id, change)

    def finish_sync(self, job_id, step, summary=None, total=0):
        """Record a step that ran inside the request (no background work) as done and current."""
        now = _now()

        def change(state):
            state["steps"][step] = {"state": "done", "done": total, "total": total, "error": None,
                                    "started": now, "finished": now, "pid": os.getpid(),
                                    "summary": summary or {}}
            state["stage"] = step
        return self.update(job_id, change)

    def start(self, job_id, step, work):
        """Run ``work(progress)`` for ``step`` of the job in a background thread.

        ``progress(done, total)`` records how far it got (throttled writes).
        ``work`` returns the step's summary dict (stored in the step's record).
        A :class:`UserError` it raises becomes the step's ``error`` sentence; any
        other exception is logged and reported as a sentence too.
        Raises :class:`UserError` 409 when a step of this job is already running.
        Returns the started thread.
        """
        running = self._claim(job_id, step)
        last = {"t": 0.0}

        def progress(done, total):
            t = time.time()
            if t - last["t"] >= 0.25 or done >= total:
                last["t"] = t
                self.set_step(job_id, step, done=int(done), total=int(total))

        def run():
            try:
                summary = work(progress) or {}
                self.set_step(job_id, step, state="done", finished=_now(), summary=summary)
            except Exception as exc:  # noqa: BLE001 - reported to the person, logged for us
                self._failed(job_id, step, exc)
            finally:
                running.close()  # the state says done/failed before the lock goes

        thread = threading.Thread(target=run, name=f"job-{job_id}-{step}", daemon=True)
        thread.start()
        return thread

    @contextlib.contextmanager
    def sync_step(self, job_id, step):
        """Run ``step`` of the job inside the request (``with store.sync_step(job, "clean"): ...``).

        Like :meth:`start` it claims the job's ``.running`` lock (409 when a step
        is running) and records the step as running first, so a crash in the
        middle is reported as interrupted (:data:`INTERRUPTED`) on the job page.
        The block must end with :meth:`finish_sync`; an exception marks the step
        failed with a sentence and is raised again.
        """
        running = self._claim(job_id, step)
        try:
            yield
        except Exception as exc:
            self._failed(job_id, step, exc)
            raise
        finally:
            running.close()

    def _claim(self, job_id, step):
        """Take the job's ``.running`` lock and mark ``step`` running; returns the lock's file."""
        folder = self.folder(job_id)
        running = _try_lock(folder / ".running")
        if running is None:
            state = read_json(folder / "state.json")
            busy = next((n for n, r in state["steps"].items() if r.get("state") in ("running", "queued")), "a")
            raise UserError(f"The {busy} step of this job is still running; wait for it to finish.", 409)
        try:
            def change(state):
                state["steps"][step] = {"state": "running", "done": 0, "total": 0, "error": None,
                                        "started": _now(), "finished": None, "pid": os.getpid(), "summary": {}}
                state["stage"] = step
            self.update(job_id, change)
        except BaseException:
            running.close()
            raise
        return running

    def _failed(self, job_id, step, exc):
        """Record ``exc`` as the step's failure, as a sentence (logged when unexpected)."""
        if isinstance(exc, UserError):
            error = exc.message
        elif is_disk_full(exc):
            log.error("job %s step %s: disk full: %s", job_id, step, exc)
            error = DISK_FULL
        else:
            log.error("job %s step %s failed:\n%s", job_id, step, traceback.format_exc())
            error = (f"The {step} step failed unexpectedly ({type(exc).__name__}: {exc}). "
                     "The error was logged; you can run the step again.")
        try:
            self.set_step(job_id, step, state="failed", finished=_now(), error=error)
        except OSError:  # the disk is still full: the step reads as interrupted once the lock goes
            log.error("job %s step %s: could not record the failure", job_id, step)

    def purge_kol(self, matches):
        """Delete, in every job, the photos/videos and crops of the KOLs whose display name ``matches(name)``.

        Used when a KOL is removed from the pool for good (a deletion request
        covers the copies kept in jobs). The job remembers the names in
        ``state["purged"]`` so they cannot be imported again from it.
        Returns how many KOL folders were deleted.
        """
        count = 0
        for state in self.list():
            hits = [(k, kol["name"]) for k, kol in enumerate(state["kols"]) if matches(kol["name"])]
            if not hits:
                continue
            folder = self.root / state["job"]
            for k, _ in hits:
                for sub in ("input", "chips"):
                    shutil.rmtree(folder / sub / str(k), ignore_errors=True)
                count += 1
            names = [name for _, name in hits]
            self.update(state["job"], lambda s: s.__setitem__(
                "purged", sorted(set(s.get("purged", [])) | set(names))))
        return count
