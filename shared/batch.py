"""A batch of photos to name: staged from the upload, predicted on every core, written as results.

A batch lives in its result folder ``DATA_DIR/predictions/<run>/`` (:class:`shared.predict.ResultFolders`):

- :func:`stage` saves the uploaded photos (and the photos of uploaded zips) under ``uploads/``
  and makes one row per photo; rows are numbered from 1 in upload order (a zip's photos in
  the zip's order), and a file that cannot be predicted gets its error in its row;
- :func:`run` predicts the staged photos through the process pool (:func:`predict_files`),
  fills the rows, deletes ``uploads/`` and writes ``thumb-<i>.jpg``, ``results.csv`` and
  ``results.json`` (``{"payload", "summary", "thumbs"}``, the result page's data);
- :func:`run_in_background` does the same in a thread and keeps ``progress.json``
  (``{"state": "running"|"done"|"failed", "done", "total", "error"}``) for the page that polls it.
"""
import logging
import shutil
import threading
import time
from concurrent.futures import as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from werkzeug.utils import secure_filename

from . import archive, images, parallel
from . import predict as engine
from .errors import UserError
from .storage import atomic_write_bytes, atomic_write_json
from .web import upload_name

log = logging.getLogger(__name__)

EXTENSIONS = ", ".join(images.IMAGE_EXTENSIONS)


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
    incoming = Path(folder) / "uploads"
    incoming.mkdir()
    rows, files = [], {}

    def add(path, name, disk=None, error=None):
        rows.append({"index": len(rows) + 1, "path": path, "filename": name, "faces": [], "error": error,
                     "width": None, "height": None})
        if disk is not None and error is None:
            files[len(rows) - 1] = disk

    for i, upload in enumerate(uploads):
        name = upload_name(upload.filename, f"photo-{i + 1}")
        if upload.filename.lower().endswith(".zip"):
            raw = incoming / f"{i:05d}.zip"
            upload.save(raw)
            upload.close()
            try:
                found, skipped = archive.extract_media_zip(raw, incoming / f"{i:05d}", "image")
            except UserError as exc:
                add(name, name, error=exc.message)
                continue
            finally:
                raw.unlink(missing_ok=True)
            for f in found:
                add(f"{name}/{f['name']}", upload_name(f["name"], "photo"), disk=Path(f["path"]))
            for s in skipped:
                add(f"{name}/{s['name']}", upload_name(s["name"], "file"), error=f"Not used: {s['reason']}.")
            continue
        if not images.is_image_name(upload.filename):
            add(name, name, error=not_a_photo(name))
            continue
        path = incoming / f"{i:05d}{Path(secure_filename(upload.filename)).suffix.lower() or '.img'}"
        upload.save(path)
        upload.close()
        if path.stat().st_size == 0:
            add(name, name, error="The file is empty.")
            continue
        add(name, name, disk=path)
    return rows, files


def run(rows, files, folder, model, models_root, names, progress=None):
    """Predict every staged photo; fills ``rows`` in place, writes the CSV and ``results.json``.

    model: the :class:`shared.classifier.Model` to use (its version is loaded by the pool's
    workers from ``models_root``); names: ``{slug: display name}``; progress: ``progress(done,
    total)`` after each photo. Returns the payload ``{"results": rows, "model_version"}``.
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
                progress(done, len(tasks))
    finally:
        shutil.rmtree(folder / "uploads", ignore_errors=True)
    atomic_write_bytes(folder / "results.csv", engine.batch_csv(rows))
    payload = {"results": rows, "model_version": model.version}
    summary = {
        "photos": len(rows),
        "failed": sum(1 for r in rows if r["error"]),
        "faces": sum(len(r["faces"]) for r in rows),
        "known": sum(f["known"] for r in rows for f in r["faces"]),
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    atomic_write_json(folder / "results.json", {"payload": payload, "summary": summary, "thumbs": thumbs})
    return payload


def run_in_background(rows, files, folder, model, models_root, names):
    """:func:`run` in a daemon thread, keeping ``folder/progress.json`` up to date; returns at once."""
    progress_path = Path(folder) / "progress.json"
    total = len(files)

    def progress(done, _total):
        atomic_write_json(progress_path, {"state": "running", "done": done, "total": total, "error": None})

    def work():
        try:
            run(rows, files, folder, model, models_root, names, progress)
            atomic_write_json(progress_path, {"state": "done", "done": total, "total": total, "error": None})
        except Exception:  # noqa: BLE001 - shown on the progress page
            log.exception("batch %s failed", Path(folder).name)
            atomic_write_json(progress_path, {"state": "failed", "done": 0, "total": total,
                                              "error": "The batch could not be processed; the error was logged."})

    progress(0, total)
    threading.Thread(target=work, name=f"batch-{Path(folder).name[:8]}", daemon=True).start()


def predict_files(tasks):
    """Run :func:`shared.predict.predict_file` over ``tasks``, yielding outcomes as they finish:
    on every core through the process pool when there is more than one photo, in this
    process otherwise (or if the pool cannot be used)."""
    if len(tasks) > 1:
        try:
            executor = parallel.pool()
            futures = [executor.submit(engine.predict_file, t) for t in tasks]
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
        yield engine.predict_file(t)
