"""Training jobs on disk: the job folder and its records (no threads, no queue: see :mod:`shared.training.jobqueue`).

A job is one uploaded training zip walking through the wizard's steps
(:data:`STEPS`: align, clean, import, train), or a "retrain now" of the whole
pool (kind ``"pool"``: only the train step). Everything about it lives in
``data/jobs/<job id>/``::

    state.json      the job's record (below), replaced atomically on every change
    input/<k>/...   the photos or videos extracted from the zip (k = KOL index)
    chips/<k>/...   aligned chips (content-addressed PNG + cached .npy embedding)
    align.json ...  each step's detailed result, written atomically when it ends
    parts/          the align step's per-chunk results while it runs

``state.json``::

    {"job": id, "kind": "image"|"video"|"pool", "created": iso time, "upload": original zip name,
     "kols": [{"name": display name, "files": [{"path": relative to the job folder, "name": name in the zip}]}],
     "skipped": [{"name", "reason"}], "notes": [sentences: where a KOL's name is not its folder's name],
     "steps": {step: {"state": "queued"|"running"|"done"|"failed", "done": int, "total": int,
                      "error": str|None, "status": HTTP status of the error, "started", "finished",
                      "rq": [ids of the RQ jobs doing the step], "summary": {...}}},
     "stage": the step started last}

The record says what the step's work last wrote; while it says "queued" or
"running", whether the work is still alive is the queue's to say
(:func:`shared.training.jobqueue.status.step_progress`), not this file's.
"""
import secrets
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from shared.core import config
from shared.core.errors import UserError
from shared.core.ids import JOB_ID_RE
from shared.core.storage import atomic_write_json, locked, read_json
from shared.faces.layout import extract_training_zip

STEPS = ("align", "clean", "import", "train")
#: The steps of each kind of job.
KIND_STEPS = {"image": STEPS, "video": STEPS, "pool": ("train",)}
#: A job folder without ``state.json`` older than this (seconds) is the leftover of a crashed upload.
INCOMPLETE_MAX_AGE_S = config.DEFAULTS["JOB_INCOMPLETE_MAX_AGE_S"]
ACTIVE = ("queued", "running")


def now_iso():
    """The current UTC time as ISO 8601 text, to the second."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class JobStore:
    """The jobs under ``root`` (normally ``data/jobs``).

    incomplete_max_age_s: a new job first sweeps away folders of uploads that never completed
    once older than this many seconds (:meth:`sweep_incomplete`; the servers pass their
    ``JOB_INCOMPLETE_MAX_AGE_S`` setting; 0: never).
    """

    def __init__(self, root, incomplete_max_age_s=INCOMPLETE_MAX_AGE_S):
        self.root = Path(root)
        self.incomplete_max_age_s = incomplete_max_age_s

    # -- creating -----------------------------------------------------------
    def create(self, save_upload, kind, upload_name):
        """Create a job from an uploaded zip.

        save_upload: a callable ``save_upload(path)`` writing the upload to ``path``
            (e.g. ``FileStorage.save``).
        kind: ``"image"`` or ``"video"``. upload_name: the zip's (secured) file name.

        Extracts the zip safely (:func:`shared.faces.layout.extract_training_zip`),
        deletes the zip, writes ``state.json`` and returns the new job id.
        On any error nothing is left on disk and the error is raised again.
        """
        folder = self._new_folder()
        try:
            upload = folder / "upload.zip"
            save_upload(str(upload))
            extracted = extract_training_zip(upload, folder / "input", kind=kind)
            upload.unlink()
            kols = [{"name": k["name"],
                     "files": [{"path": str(Path(f["path"]).relative_to(folder)), "name": f["name"]}
                               for f in k["files"]]} for k in extracted.kols]
            self._write_new(folder, kind, upload_name, kols, extracted.skipped, extracted.notes)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder.name

    def create_pool_training(self):
        """A job of kind ``"pool"``: a training of the whole pool as it is ("retrain now"). Returns its id."""
        folder = self._new_folder()
        try:
            self._write_new(folder, "pool", None, [], [])
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return folder.name

    def _new_folder(self):
        self.root.mkdir(parents=True, exist_ok=True)
        self.sweep_incomplete(self.incomplete_max_age_s)
        folder = self.root / secrets.token_hex(8)
        folder.mkdir()
        return folder

    @staticmethod
    def _write_new(folder, kind, upload_name, kols, skipped, notes=()):
        atomic_write_json(folder / "state.json", {
            "job": folder.name, "kind": kind, "created": now_iso(), "upload": upload_name,
            "kols": kols, "skipped": skipped, "notes": list(notes), "steps": {}, "stage": None})

    def sweep_incomplete(self, older_than_s=INCOMPLETE_MAX_AGE_S):
        """Delete job folders that never got a ``state.json`` (an upload cut off by a crash or kill)
        once they are older than ``older_than_s`` seconds (0: none). Returns how many were deleted."""
        count, now = 0, time.time()
        if not older_than_s:
            return 0
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
        """The job's record (``state.json``) as written."""
        state = read_json(self.folder(job_id) / "state.json")
        if state is None:  # deleted between the check and the read
            raise UserError("There is no training job with this id.", 404)
        return state

    def ids(self):
        """Ids of every job with a record (any order)."""
        if not self.root.is_dir():
            return []
        return [e.name for e in self.root.iterdir() if JOB_ID_RE.match(e.name) and (e / "state.json").is_file()]

    def list(self):
        """Records of every job, newest first."""
        out = []
        for job_id in self.ids():
            try:
                out.append(self.state(job_id))
            except (UserError, ValueError, KeyError):
                continue
        return sorted(out, key=lambda s: s.get("created") or "", reverse=True)

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
    def locked(self, job_id):
        """The job's lock (``with store.locked(job): ...``): serialises changes to its record."""
        return locked(self.folder(job_id) / ".lock")

    def update(self, job_id, change):
        """Apply ``change(state)`` (mutates the dict) under the job's lock and save atomically."""
        folder = self.folder(job_id)
        with locked(folder / ".lock"):
            state = read_json(folder / "state.json")
            change(state)
            atomic_write_json(folder / "state.json", state)
            return state

    def set_step(self, job_id, step, **fields):
        """Merge ``fields`` into a step's record (and make it the current stage when it is queued or starts)."""
        def change(state):
            record = state["steps"].setdefault(step, {})
            record.update(fields)
            if fields.get("state") in ACTIVE:
                state["stage"] = step
        return self.update(job_id, change)

    def finish_sync(self, job_id, step, summary=None, total=0):
        """Record ``step`` as done and current, with ``summary`` (used where a step's result is written directly)."""
        now = now_iso()

        def change(state):
            state["steps"][step] = {"state": "done", "done": total, "total": total, "error": None,
                                    "started": now, "finished": now, "rq": [], "summary": summary or {}}
            state["stage"] = step
        return self.update(job_id, change)

    def delete(self, job_id):
        """Delete the job's folder and everything in it (the caller checks that no step is running)."""
        folder = self.folder(job_id)
        # rename first so a half-deleted folder is never read as a job
        trash = folder.with_name(f".deleted-{folder.name}-{secrets.token_hex(4)}")
        folder.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
