"""A batch of photos to name: staged from the upload, predicted on every core, written as results.

A batch lives in its result folder ``DATA_DIR/predictions/<run>/`` (:class:`shared.recognition.predict.ResultFolders`):

- :func:`begin` (before anything is saved) refuses a batch from someone who already has
  ``BATCH_CONCURRENT_PER_USER`` batches running (429), and starts its :class:`Tracker`;
- :func:`stage` saves the uploaded photos (and the photos of uploaded zips) under ``uploads/``
  and makes one row per photo; rows are numbered from 1 in upload order (a zip's photos in
  the zip's order), and a file that cannot be predicted gets its error in its row;
- :func:`run` predicts the staged photos through the process pool (:func:`predict_files`),
  fills the rows, deletes ``uploads/`` and writes ``thumb-<i>.jpg``, ``results.csv`` and
  ``results.json`` (``{"payload", "summary", "thumbs"}``, the result page's data, plus
  ``"error"`` for a batch that did not finish);
- :func:`run_tracked` runs it in the request, :func:`run_in_background` in a thread; both keep
  ``progress.json`` (:class:`Tracker`: ``{"state": "running"|"done"|"failed", "done", "total",
  "error"}``, the page's progress object, plus who started it, the process and its heartbeat)
  and ``rows.json`` (the rows so far and which of them are named).

Liveness. The process running a batch rewrites ``progress.json`` every few seconds
(:func:`beat_every`). A batch still "running" whose heartbeat is older than
``BATCH_STALE_S`` seconds lost its process (a gunicorn worker killed, out of memory, a
restart): :func:`status` then ends it with :data:`STOPPED`, keeping the photos already named
(:func:`stop`), and it no longer counts as running.
"""
import contextlib
import logging
import os
import shutil
import socket
import threading
import time
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from shared.core.errors import UserError
from shared.core.names import upload_name
from shared.core.storage import atomic_write_bytes, atomic_write_json, locked, read_json
from shared.faces import archive, images, parallel, staging
from shared.recognition import predict

log = logging.getLogger(__name__)

EXTENSIONS = ", ".join(images.IMAGE_EXTENSIONS)

#: Files of a batch in its result folder: the progress object (with the heartbeat), the rows so far.
PROGRESS, ROWS = "progress.json", "rows.json"
#: Lock file (in the predictions folder) under which a new batch is counted and started.
LOCK = ".batches.lock"
#: Longest pause in seconds between two heartbeats of a running batch (shorter when
#: ``BATCH_STALE_S`` is small: see :func:`beat_every`).
HEARTBEAT_S = 5.0
#: The keys of ``progress.json`` a page or script sees (the rest is for the server).
PUBLIC = ("state", "done", "total", "error")

FAILED = "The batch could not be processed; the error was logged."
STOPPED = ("This batch stopped because the server process running it ended; the photos already named "
           "are below; run the rest again.")
NOT_REACHED = "Not named: the batch stopped before this photo; run it again."


def not_a_photo(name):
    """The sentence for a file that is not a photo this tool reads (with a hint when it is a video or zip)."""
    hint = archive.other_kind_hint([name], "image")
    return f"'{name}' is not a photo this tool reads: use {EXTENSIONS}.{hint}"


def stage(uploads, folder):
    """Save the uploaded parts (photos, or zips of photos) under ``folder/uploads``.

    uploads: werkzeug ``FileStorage`` objects with a non-empty ``filename``.
    Returns ``(rows, files)``: one row per photo ``{"index", "path", "filename", "faces", "error",
    "width", "height"}`` (``path`` is the name as uploaded, ``zip name/path inside it`` for a zip's
    photos) and ``{row position: path on disk}`` for the rows that can be predicted.
    """
    rows, files = [], {}
    for part in staging.stage(uploads, Path(folder) / "uploads"):
        if part.inner is None:
            path = name = part.name
        else:  # a file of a zip
            path, name = f"{part.name}/{part.inner}", upload_name(part.inner, "file" if part.problem else "photo")
        error = _row_error(part)
        rows.append({"index": len(rows) + 1, "path": path, "filename": name, "faces": [], "error": error,
                     "width": None, "height": None})
        if error is None:
            files[len(rows) - 1] = part.path
    return rows, files


def _row_error(part):
    """The sentence in a row for a :class:`shared.faces.staging.Part`'s problem (``None``: a photo to predict)."""
    if part.problem == staging.BAD_ZIP:
        return part.error.message
    if part.problem == staging.NOT_USED:
        return f"Not used: {part.reason}."
    if part.problem == staging.NOT_A_PHOTO:
        return not_a_photo(part.name)
    if part.problem == staging.EMPTY:
        return "The file is empty."
    return None


def run(rows, files, folder, model, models_root, names, progress=None):
    """Predict every staged photo; fills ``rows`` in place, writes the CSV and ``results.json``.

    model: the :class:`shared.recognition.model.Model` to use (its version is loaded by the pool's
    workers from ``models_root``); names: ``{slug: display name}``; progress: ``progress(done,
    total, position)`` after each photo (``position``: the row just filled). Returns the payload
    ``{"results": rows, "model_version"}``.
    """
    folder = Path(folder)
    started = time.perf_counter()
    tasks = [(i, str(path), rows[i]["filename"], models_root, model.version, str(folder / f"thumb-{i}.jpg"), names)
             for i, path in files.items()]
    thumbs = {}
    try:
        for done, outcome in enumerate(predict_files(tasks), 1):
            row = rows[outcome["index"]]
            row["faces"], row["error"] = outcome["faces"], outcome["error"]
            row["width"], row["height"] = outcome["width"] or None, outcome["height"] or None
            if outcome["thumb"]:
                thumbs[outcome["index"]] = f"thumb-{outcome['index']}.jpg"
            if progress:
                progress(done, len(tasks), outcome["index"])
    finally:
        shutil.rmtree(folder / "uploads", ignore_errors=True)
    atomic_write_bytes(folder / "results.csv", predict.batch_csv(rows))
    payload = {"results": rows, "model_version": model.version}
    atomic_write_json(folder / "results.json", {"payload": payload, "thumbs": thumbs,
                                                "summary": _summary(rows, time.perf_counter() - started)})
    return payload


def _summary(rows, elapsed_s):
    """The result page's counts: photos, photos with a problem, faces, named faces, seconds taken."""
    return {
        "photos": len(rows),
        "failed": sum(1 for r in rows if r["error"]),
        "faces": sum(len(r["faces"]) for r in rows),
        "known": sum(f["known"] for r in rows for f in r["faces"]),
        "elapsed_s": round(elapsed_s, 2),
    }


def run_tracked(rows, files, folder, model, models_root, names, tracker):
    """:func:`run` with ``tracker`` (:func:`begin`'s) kept up to date; ends it done, or failed on an error.

    On an error the photos already named are kept as results (:func:`stop` with
    :data:`FAILED`) and the error is raised again. Returns :func:`run`'s payload.
    """
    tracker.staged(rows, len(files), model.version)
    return _tracked(rows, files, folder, model, models_root, names, tracker)


def run_in_background(rows, files, folder, model, models_root, names, tracker=None):
    """:func:`run_tracked` in a daemon thread; returns at once (the page polls ``progress.json``,
    which already has the batch's total).

    tracker: :func:`begin`'s; without one the batch is tracked from here, counted for nobody.
    """
    tracker = tracker or begin(folder, None, 0, 0)
    tracker.staged(rows, len(files), model.version)

    def work():
        with contextlib.suppress(Exception):  # logged and recorded by _tracked
            _tracked(rows, files, folder, model, models_root, names, tracker)

    threading.Thread(target=work, name=f"batch-{Path(folder).name[:8]}", daemon=True).start()


def _tracked(rows, files, folder, model, models_root, names, tracker):
    """:func:`run` on staged rows, ending ``tracker`` done, or failed (and raising) on an error."""
    try:
        payload = run(rows, files, folder, model, models_root, names, tracker.named)
    except Exception:
        log.exception("batch %s failed", Path(folder).name)
        tracker.fail(FAILED)
        raise
    tracker.finish()
    return payload


# -- liveness: progress.json with a heartbeat -----------------------------------------------------
def beat_every(stale_s):
    """Seconds between heartbeats for a staleness of ``stale_s`` s: :data:`HEARTBEAT_S`, or a
    quarter of ``stale_s`` when that is shorter, so a live batch never looks stale."""
    return min(HEARTBEAT_S, stale_s / 4) if stale_s else HEARTBEAT_S


class Tracker:
    """``progress.json`` of one batch, rewritten by the process working on it.

    The file holds the progress object (``state``, ``done``, ``total``, ``error``) and
    ``actor`` (who started it, :attr:`shared.web.auth.Principal.actor`), ``pid`` and ``host``
    (the process), ``started`` and ``heartbeat`` (Unix time in seconds). A daemon thread
    rewrites it every ``every_s`` seconds until :meth:`finish` or :meth:`fail`.
    """

    def __init__(self, folder, actor, every_s=HEARTBEAT_S):
        self.folder, self.every_s = Path(folder), every_s
        self.state = {"state": "running", "done": 0, "total": 0, "error": None, "actor": actor,
                      "pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "heartbeat": None}
        self.rows, self.named_rows, self.model_version = [], [], None
        self._lock, self._over = threading.Lock(), threading.Event()

    def start(self):
        """Write the first heartbeat and start the thread that keeps beating."""
        self._write()
        threading.Thread(target=self._beat, name=f"beat-{self.folder.name[:8]}", daemon=True).start()

    def _beat(self):
        while not self._over.wait(self.every_s):
            try:
                self._write()
            except OSError as exc:  # a full disk: the next beat tries again
                log.warning("batch %s: heartbeat not written: %s", self.folder.name, exc)

    def _write(self, **changes):
        with self._lock:
            self.state.update(changes, heartbeat=time.time())
            atomic_write_json(self.folder / PROGRESS, self.state)

    def _save_rows(self):
        atomic_write_json(self.folder / ROWS, {"rows": self.rows, "named": self.named_rows,
                                               "model_version": self.model_version})

    def staged(self, rows, total, model_version):
        """The batch's rows (filled in place by :func:`run`) and ``total`` photos to predict."""
        self.rows, self.model_version = rows, model_version
        self._save_rows()
        self._write(total=total)

    def named(self, done, _total, position):
        """:func:`run`'s progress: the row at ``position`` is filled, ``done`` photos so far."""
        self.named_rows.append(position)
        self._save_rows()
        self._write(done=done)

    def finish(self):
        """The batch is done: stop beating, record it."""
        self._over.set()
        self._write(state="done", done=self.state["total"])
        (self.folder / ROWS).unlink(missing_ok=True)

    def fail(self, sentence):
        """The batch ended without finishing: stop beating, keep what is named (:func:`stop`)."""
        self._over.set()
        with self._lock:
            try:
                self.state = stop(self.folder, sentence, self.state)
            except OSError as exc:  # a full disk: the batch goes stale and a reader ends it
                log.error("batch %s: could not record its end: %s", self.folder.name, exc)


def stop(folder, sentence, state):
    """End a batch that did not finish: results of the photos named so far, ``failed`` with ``sentence``.

    Writes ``results.json`` and ``results.csv`` from ``rows.json`` (the rows not named yet get
    :data:`NOT_REACHED`), deletes what is left of ``uploads/``, and writes ``state`` (the batch's
    ``progress.json`` as read) as failed. Returns the new progress.
    """
    folder = Path(folder)
    saved = read_json(folder / ROWS) or {"rows": [], "named": [], "model_version": None}
    named = set(saved["named"])
    rows = saved["rows"]
    for position, row in enumerate(rows):
        if position not in named and not row["error"]:
            row["error"] = NOT_REACHED
    shutil.rmtree(folder / "uploads", ignore_errors=True)
    thumbs = {p: f"thumb-{p}.jpg" for p in sorted(named) if (folder / f"thumb-{p}.jpg").is_file()}
    elapsed = (state.get("heartbeat") or state.get("started") or 0) - (state.get("started") or 0)
    atomic_write_bytes(folder / "results.csv", predict.batch_csv(rows))
    atomic_write_json(folder / "results.json", {
        "payload": {"results": rows, "model_version": saved["model_version"]},
        "summary": _summary(rows, elapsed), "thumbs": thumbs, "error": sentence})
    state = dict(state, state="failed", error=sentence)
    atomic_write_json(folder / PROGRESS, state)
    return state


def _heartbeat(state, path):
    """When a batch last showed life (Unix time): its heartbeat, else (older batches) the file's time."""
    if state.get("heartbeat"):
        return state["heartbeat"]
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def is_stale(state, path, stale_s, now=None):
    """True for a ``running`` batch whose heartbeat is older than ``stale_s`` seconds (0: never)."""
    now = time.time() if now is None else now
    return bool(stale_s) and state.get("state") == "running" and now - _heartbeat(state, path) > stale_s


def status(folder, stale_s):
    """The batch's ``progress.json``, or ``None`` when it has none (not a batch, or a finished old one).

    A running batch whose process is gone (:func:`is_stale`) is ended here with :data:`STOPPED`.
    """
    path = Path(folder) / PROGRESS
    state = read_json(path)
    if state is not None and is_stale(state, path, stale_s):
        log.warning("batch %s: no heartbeat from pid %s on %s for %s s; stopped", Path(folder).name,
                    state.get("pid"), state.get("host"), stale_s)
        state = stop(folder, STOPPED, state)
    return state


def public(state):
    """The progress object a page or script sees (:data:`PUBLIC` keys only)."""
    return {k: state.get(k) for k in PUBLIC}


# -- how many batches one user runs at once ----------------------------------------------------------
def running(root, actor, stale_s):
    """How many batches of ``actor`` under ``root`` (the predictions folder) are running and alive."""
    count = 0
    for folder in Path(root).iterdir() if Path(root).is_dir() else ():
        path = folder / PROGRESS
        try:
            state = read_json(path)
        except (OSError, ValueError):  # not a folder, or being swept away
            continue
        if state and state.get("actor") == actor and state.get("state") == "running" \
                and not is_stale(state, path, stale_s):
            count += 1
    return count


def too_many(count):
    """The sentence for someone who already has ``count`` batches running (the limit)."""
    plural = "batch" if count == 1 else "batches"
    return f"You already have {count} {plural} running; wait for one to finish, then send this one again."


def begin(folder, actor, limit, stale_s):
    """Start the :class:`Tracker` of a new batch in ``folder`` (a fresh result folder) for ``actor``.

    limit: most batches one actor may have running at once (``BATCH_CONCURRENT_PER_USER``,
    0: no limit); stale_s: ``BATCH_STALE_S``. The count and the start happen under one lock,
    so two batches sent at once cannot both take the last place. Over the limit: the folder
    is removed and a 429 :class:`UserError` says so.
    """
    folder = Path(folder)
    with locked(folder.parent / LOCK):
        count = running(folder.parent, actor, stale_s) if limit and actor is not None else 0
        if count >= limit > 0:
            shutil.rmtree(folder, ignore_errors=True)
            raise UserError(too_many(count), 429)
        tracker = Tracker(folder, actor, beat_every(stale_s))
        tracker.start()
    return tracker


def predict_files(tasks):
    """Run :func:`shared.recognition.predict.predict_file` over ``tasks``, yielding outcomes as they finish:
    on every core through the process pool when there is more than one photo, in this
    process otherwise (or if the pool cannot be used)."""
    if len(tasks) > 1:
        try:
            executor = parallel.executor()
            futures = [executor.submit(predict.predict_file, t) for t in tasks]
        except (BrokenProcessPool, OSError, RuntimeError):
            log.exception("the process pool failed; running the batch in this process")
        else:
            done = set()
            try:
                for future in as_completed(futures):
                    outcome = future.result()
                    done.add(outcome["index"])
                    yield outcome
                return
            except (BrokenProcessPool, OSError, RuntimeError):
                log.exception("the process pool failed; finishing the batch in this process")
                tasks = [t for t in tasks if t[0] not in done]
    for t in tasks:
        yield predict.predict_file(t)
