"""From a photo to named faces: detect, embed, ask the model, draw the answers.

The app views and the video helper use these plain functions; the batch worker
:func:`predict_file` runs in :mod:`shared.faces.parallel`'s worker processes.

A *face object* is the dict of the JSON contract, plus its number::

    {"number": int (1 = largest face; the number drawn on the annotated photo),
     "box": {"top": int, "right": int, "bottom": int, "left": int},
     "identity": display name or None, "confidence": float, "known": bool}

``box`` is in pixels of the photo *as uploaded* (EXIF orientation applied), whatever
size it was analysed at: :func:`shared.faces.images.load_photo` shrinks big photos to
``images.MAX_SIDE`` for detection, and :func:`predict_faces` maps the boxes back
with :func:`shared.faces.images.to_original`. ``confidence`` is the probability that the
answer (the name, or "unknown") is right (see :mod:`shared.recognition.rule`). Faces are
listed largest first. ``identity`` is the display name the training pool has for
the KOL *now* (:meth:`shared.training.pool.Pool.display_names`), so a rename needs no retraining.

Kept results. :func:`predict_faces` also gives each face its ``"kol"`` (the KOL's pool slug,
``None`` when unknown): what a result folder stores. Whoever shows a stored face again passes it
through :func:`shown`, with the names of the pool as it is then: a renamed KOL shows the new
name, and a KOL deleted since (not in the pool, not in the models) shows as
``{"identity": None, "known": False, "deleted": True}`` ("deleted KOL" on pages, photos and CSV),
``confidence`` as it was. The stored files are never rewritten: an annotated photo is kept with
its unlabelled copy and its faces (:func:`save_drawn`), and a photo or CSV whose labels changed is
drawn again beside it, once (:func:`current_image`, :func:`current_csv`).

This module also keeps the prediction result folders (:class:`ResultFolders`), writes
the batch CSV (:func:`batch_csv`) and finds a KOL's pool photo nearest a face
(:func:`representative_chip`).
"""
import contextlib
import hashlib
import io
import json
import logging
import os
import shutil
import threading
import time
import uuid
from pathlib import Path

import numpy as np

from shared.core import config, csvsafe, owners
from shared.core.errors import UserError
from shared.core.ids import RUN_RE
from shared.core.storage import atomic_write_bytes, atomic_write_json, changed_at, read_json
from shared.faces import draw, engine, images
from shared.recognition import review
from shared.recognition.store import ModelStore

#: Longest side in pixels of the annotated thumbnails written for batch results.
THUMB_SIDE = 320
#: What a face of a KOL deleted after the result was made is called on pages, photos and in the CSV.
DELETED = "deleted KOL"

log = logging.getLogger(__name__)


def face_object(box, prediction, names, number=None):
    """The contract's face dict for one ``box`` ``(top, right, bottom, left)`` and its
    :class:`shared.recognition.model.Prediction`; ``names`` maps slug to display name;
    ``number`` is the face's number (1-based) in its photo."""
    top, right, bottom, left = (int(v) for v in box)
    name = None  # the contract's "identity": the display name, not the slug
    if prediction.known and prediction.slug is not None:
        name = names.get(prediction.slug, prediction.slug)
    obj = {"box": {"top": top, "right": right, "bottom": bottom, "left": left},
           "identity": name, "confidence": float(prediction.confidence), "known": bool(prediction.known)}
    if number is not None:
        obj = {"number": int(number), **obj}
    return obj


def predict_faces(rgb, model, found=None, original_size=None, names=None, negatives=None):
    """Name every face in ``rgb`` (RGB ``uint8`` ``(h, w, 3)``) with ``model``.

    found: the :class:`shared.faces.engine.Face` list if already computed (else detected here,
        HOG with one upsampling step, the same as face_recognition's default).
    original_size: ``(W, H)`` of the photo as uploaded when ``rgb`` is a shrunk copy
        (from :func:`shared.faces.images.load_photo`); the face objects' boxes are then in
        the photo's own pixels. ``None``: boxes in ``rgb``'s pixels.
    names: ``{slug: display name}`` (the pool's names); default the model's own.
    negatives: the reviewed "not X" faces (:meth:`shared.recognition.review.Queue.negatives`); ``None``: none.
    Returns ``(objects, found)``: face objects (largest face first, numbered 1...) and
    the matching :class:`shared.faces.engine.Face` list, in the same order, boxes in ``rgb``'s pixels.
    """
    if found is None:
        found = engine.analyze(rgb)
    if not found:
        return [], []
    predictions = model.predict(np.array([f.embedding for f in found]), negatives=negatives)
    shown = {**model.names, **(names or {})}
    size = original_size or (rgb.shape[1], rgb.shape[0])
    objects = [dict(face_object(images.to_original(f.box, rgb.shape, size), p, shown, number=n),
                    kol=p.slug if p.known else None)
               for n, (f, p) in enumerate(zip(found, predictions), 1)]
    return objects, found


def shown(face, names):
    """The contract's face object for a face of :func:`predict_faces` (fresh or stored), named with
    ``names`` (``{slug: display name}`` as the pool and the model name the KOLs now).

    Its ``"kol"`` is dropped; a KOL no longer in ``names`` (deleted since) gives ``identity``
    ``None``, ``known`` ``False`` and ``"deleted": True``. A face stored without ``"kol"`` (before
    results kept it) is shown as stored.
    """
    out = {key: value for key, value in face.items() if key != "kol"}
    slug = face.get("kol")
    if slug is None:
        return out
    if slug in names:
        out["identity"] = names[slug]
    else:
        out.update(identity=None, known=False, deleted=True)
    return out


def shown_rows(rows, names):
    """Batch result rows with every face :func:`shown` (new dicts; ``rows`` are left as they are)."""
    return [dict(row, faces=[shown(f, names) for f in row["faces"]]) for row in rows]


def label(obj):
    """The text drawn beside a face: ``"1 Name 97%"``, ``"2 unknown 88%"`` or ``"3 deleted KOL"``
    (number first when known)."""
    if obj.get("deleted"):
        text = DELETED
    else:
        text = f"{obj['identity'] if obj['known'] else 'unknown'} {obj['confidence'] * 100:.0f}%"
    return f"{obj['number']} {text}" if obj.get("number") else text


def annotated(rgb, boxes, faces):
    """A new RGB array: ``rgb`` with a box and a :func:`label` drawn for each face object of
    ``faces``, at ``boxes`` (``(top, right, bottom, left)`` in ``rgb``'s pixels, in the same order)."""
    items = [(box, label(face), face["known"]) for box, face in zip(boxes, faces)]
    return draw.labelled_boxes(np.array(rgb, copy=True, order="C"), items)


def _sidecars(name):
    """The files kept beside the annotated photo ``name``: its unlabelled copy and its record."""
    stem = Path(name).stem
    return f"{stem}.plain.jpg", f"{stem}.faces.json"


def save_drawn(folder, name, rgb, objects, boxes, source=None, side=None, quality=90):
    """Write ``folder/name``: ``rgb`` with each face object's box and :func:`label` (``side``: as a
    thumbnail of that longest side), with what :func:`current_image` needs to draw it again.

    boxes: the faces' ``(top, right, bottom, left)`` in ``rgb``'s pixels, in the order of
    ``objects``; source: the uploaded photo's name (the download is named after it). Beside it:
    ``<stem>.plain.jpg`` (the same picture without boxes) and ``<stem>.faces.json``
    ``{"source", "plain", "boxes" (in the plain copy's pixels), "faces" (the objects, with
    "kol"), "labels" (as drawn)}``.
    """
    folder = Path(folder)
    drawn, plain = annotated(rgb, boxes, objects), rgb
    if side:
        drawn, plain = thumbnail(drawn, side), thumbnail(rgb, side)
    sy, sx = plain.shape[0] / rgb.shape[0], plain.shape[1] / rgb.shape[1]
    scaled = [[round(t * sy), round(r * sx), round(b * sy), round(left * sx)] for t, r, b, left in boxes]
    plain_name, record_name = _sidecars(name)
    atomic_write_bytes(folder / plain_name, images.encode_jpeg(plain, quality=quality))
    atomic_write_json(folder / record_name, {"source": source, "plain": plain_name, "boxes": scaled,
                                             "faces": objects, "labels": [label(o) for o in objects]})
    atomic_write_bytes(folder / name, images.encode_jpeg(drawn, quality=quality))


def drawn_source(folder, name):
    """The uploaded photo's name recorded by :func:`save_drawn` for ``folder/name``, or ``None``."""
    record = read_json(Path(folder) / _sidecars(name)[1])
    return (record or {}).get("source")


@contextlib.contextmanager
def _keeping_age(folder):
    """Files written in ``folder`` inside this block leave its modification time as it was: a result
    expires a fixed time after it was made (:func:`sweep_predictions`), however often it is read."""
    before = changed_at(folder)
    try:
        yield
    finally:
        if before is not None:
            with contextlib.suppress(OSError):
                os.utime(folder, (time.time(), before))


def _copy_once(folder, name, suffix, key, make_bytes):
    """The name of ``<stem of name>.<hash of key><suffix>`` in ``folder``, written (atomically, its
    age kept) from ``make_bytes()`` unless it is there already."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    copy = f"{Path(name).stem}.{digest}{suffix}"
    if not (Path(folder) / copy).is_file():
        with _keeping_age(folder):
            atomic_write_bytes(Path(folder) / copy, make_bytes())
    return copy


def current_image(folder, name, names):
    """The name of the file in ``folder`` to send for the annotated photo ``name``, its labels as
    ``names`` (``{slug: display name}`` now) give them: ``name`` itself while they are the ones drawn
    (and for photos kept without a record), else a copy drawn again from the unlabelled one, once
    per set of labels (a deleted KOL reads :data:`DELETED`, a renamed one its new name)."""
    folder = Path(folder)
    record = read_json(folder / _sidecars(name)[1])
    if record is None or not (folder / record["plain"]).is_file():
        return name
    faces = [shown(f, names) for f in record["faces"]]
    labels = [label(f) for f in faces]
    if labels == record["labels"]:
        return name

    def redraw():
        plain = images.load_image(folder / record["plain"], max_side=None)
        return images.encode_jpeg(annotated(plain, record["boxes"], faces))

    return _copy_once(folder, name, ".jpg", labels, redraw)


def current_csv(folder, names, name="results.csv"):
    """The name of the batch CSV in ``folder`` to send, its faces :func:`shown` with ``names``:
    ``name`` itself while nothing changed (and for a batch without ``results.json``), else a copy
    written once per content."""
    folder = Path(folder)
    stored = read_json(folder / "results.json")
    if stored is None or not (folder / name).is_file():
        return name
    data = batch_csv(shown_rows(stored["payload"]["results"], names))
    if data == (folder / name).read_bytes():
        return name
    return _copy_once(folder, name, ".csv", hashlib.sha256(data).hexdigest(), lambda: data)


def thumbnail(rgb, side=THUMB_SIDE):
    """``rgb`` scaled down (aspect kept) so that its longest side is at most ``side`` pixels."""
    import cv2

    h, w = rgb.shape[:2]
    scale = side / max(h, w)
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def representative_chip(pool, slug, embedding):
    """The chip id of the KOL ``slug``'s pool photo nearest to ``embedding`` ``(128,)``,
    or ``None`` when the KOL is no longer in the pool (or has no photo)."""
    chips, X = pool.kol_embeddings(slug)
    if not chips:
        return None
    return chips[int(np.argmin(engine.distances(X, embedding)))]


# -- batch results --------------------------------------------------------------------

CSV_COLUMNS = ["filename", "face", "identity", "known", "confidence", "top", "right", "bottom", "left", "error",
               "index", "path", "width", "height"]


def batch_csv(results):
    """The batch results as CSV bytes (UTF-8 with BOM for spreadsheets), columns :data:`CSV_COLUMNS`.

    results: rows ``{"index", "path", "filename", "width", "height", "faces", "error"}``.
    One CSV row per face (``face`` = its number, as drawn on the photo), or one row per
    photo without faces. ``index`` is the photo's 1-based place in the upload, ``path``
    its name as uploaded (``zip name/path inside the zip`` for photos from a zip).
    Boxes are in the pixels of the photo as uploaded (``width`` x ``height``).
    """
    out = io.StringIO()
    writer = csvsafe.writer(out)  # text cells never read as formulas
    writer.writerow(CSV_COLUMNS)
    for row in results:
        tail = [row.get("index", ""), row.get("path") or row["filename"], row.get("width") or "",
                row.get("height") or ""]
        if not row["faces"]:
            writer.writerow([row["filename"], "", "", "", "", "", "", "", "", row["error"] or ""] + tail)
        for n, face in enumerate(row["faces"], 1):
            b = face["box"]
            who = DELETED if face.get("deleted") else face["identity"] or "unknown"
            writer.writerow([row["filename"], face.get("number", n), who, face["known"],
                             f"{face['confidence']:.4f}", b["top"], b["right"], b["bottom"], b["left"],
                             row["error"] or ""] + tail)
    return ("\ufeff" + out.getvalue()).encode("utf-8")




def sweep_predictions(root, max_age_s, now=None):
    """Delete ``root/<run>/`` folders (``root`` is ``data/predictions``) last changed more than
    ``max_age_s`` seconds ago. Returns the run ids deleted, sorted. ``max_age_s`` 0: keep all."""
    root, now = Path(root), time.time() if now is None else now
    if not max_age_s or not root.is_dir():
        return []
    deleted = []
    for entry in root.iterdir():
        mtime = changed_at(entry)
        if RUN_RE.match(entry.name) and entry.is_dir() and mtime is not None and now - mtime > max_age_s:
            shutil.rmtree(entry, ignore_errors=True)
            deleted.append(entry.name)
    return sorted(deleted)


class ResultFolders:
    """The prediction result folders ``<root>/<run id>/`` (annotated photos, thumbnails, CSV).

    :meth:`new` makes one, with the owner record of who made it (:mod:`shared.core.owners`);
    :meth:`folder` gives it back only to a reader allowed to see it. Folders older than
    ``keep_s`` seconds (the main server passes its ``PREDICTION_MAX_AGE_S`` setting; 0 keeps
    them all) are swept away, at most once every ``sweep_every_s`` seconds per process, when
    a new one is made.
    """


    def __init__(self, root, keep_s=config.DEFAULTS["PREDICTION_MAX_AGE_S"], sweep_every_s=600):
        self.root, self.keep_s, self.sweep_every_s = Path(root), keep_s, sweep_every_s

    _last_sweep = {}
    _lock = threading.Lock()

    def sweep(self, now=None):
        """Delete run folders not modified for ``keep_s`` seconds (housekeeping's rule,
        :func:`sweep_predictions`; ``keep_s`` 0: none). Returns how many were removed."""
        return len(sweep_predictions(self.root, self.keep_s, now=now))

    def new(self, owner=None):
        """A fresh result folder, recorded as made by ``owner`` (a :class:`shared.web.auth.Principal`;
        ``None``: no record, so only admins may read it); returns ``(run id, path)``."""
        self.root.mkdir(parents=True, exist_ok=True)
        now = time.time()
        with self._lock:
            due = now - self._last_sweep.get(str(self.root), 0.0) > self.sweep_every_s
            if due:
                self._last_sweep[str(self.root)] = now
        if due:
            self.sweep(now)
        run = uuid.uuid4().hex
        folder = self.root / run
        folder.mkdir()
        if owner is not None:
            owners.write(folder, owner)
        return run, folder

    def folder(self, run, reader):
        """The folder of run ``run`` if the principal ``reader`` may read it (:func:`shared.core.owners.may_read`).

        :class:`UserError` 404 for malformed or expired ids and for someone else's result alike,
        so nobody can tell whether an id exists.
        """
        if (not RUN_RE.match(str(run)) or not (self.root / run).is_dir()
                or not owners.may_read(self.root / run, reader)):
            raise UserError("There is no such result: results are kept for one day.", 404)
        return self.root / run


# -- batch worker (runs in shared.faces.parallel's processes) ------------------------------

_stores = {}  # {models root: ModelStore} of this worker process
_stores_lock = threading.Lock()


def _model(models_root, version):
    """The model ``version`` under ``models_root`` as its file is now, for this worker process.

    :meth:`shared.recognition.store.ModelStore.cached` of one store per root: loaded once, and
    reloaded on the next photo after the file was rewritten (a KOL or some photos deleted by
    :meth:`~shared.recognition.store.ModelStore.forget` keep the version's name), so a deleted KOL is
    never named by a batch that starts, or continues, after the delete.
    """
    with _stores_lock:
        store = _stores.get(str(models_root))
        if store is None:
            _stores.clear()  # one root in practice: keep one model in memory, not one per root
            store = _stores[str(models_root)] = ModelStore(models_root)
    return store.cached(version)


def queue_unsure(queue, rgb, found, objects, model, source, names):
    """:meth:`shared.recognition.review.Queue.collect`; a failure is logged, never the photo's error."""
    try:
        queue.collect(rgb, found, objects, model, source, names)
    except Exception:  # noqa: BLE001 - the answer stands without its review item
        log.exception("could not queue the unsure faces of %s for review", source.get("photo"))


def predict_file(task):
    """Predict the faces of one uploaded photo (a batch item).

    task: ``(index, photo_path, display_name, models_root, version, thumb_path, names)``;
        ``thumb_path`` is where the annotated thumbnail (JPEG) is written, ``names`` the
        pool's ``{slug: display name}`` (may be ``None``).
    Returns ``{"index", "faces": [face objects], "error": str|None, "thumb": bool,
    "width", "height" (the photo's own size, 0 when unreadable), "worker": pid}``.
    A bad photo gives an ``error`` sentence, never an exception. The reviewed "not X" faces of the
    review folder beside ``models_root`` are applied, and the faces below "sure" are queued there
    (:mod:`shared.recognition.review`; the run is the folder of ``thumb_path``).
    """
    index, photo, name, models_root, version, thumb_path = task[:6]
    names = task[6] if len(task) > 6 else None
    result = {"index": index, "faces": [], "error": None, "thumb": False, "width": 0, "height": 0,
              "worker": os.getpid()}
    try:
        rgb, size = images.load_photo(photo, name=name)
        result["width"], result["height"] = size
        model, queue = _model(models_root, version), review.Queue(review.beside(models_root))
        objects, found = predict_faces(rgb, model, original_size=size, names=names, negatives=queue.negatives())
        result["faces"] = objects
        queue_unsure(queue, rgb, found, objects, model, {"kind": "batch", "run": Path(thumb_path).parent.name,
                                                          "photo": name}, names)
        if not objects:
            result["error"] = "No face was found in this photo."
        save_drawn(Path(thumb_path).parent, Path(thumb_path).name, rgb, objects, [f.box for f in found],
                   source=name, side=THUMB_SIDE, quality=82)
        result["thumb"] = True
    except UserError as exc:
        result["error"] = exc.message
    except Exception:  # noqa: BLE001 - one broken photo must not fail the batch
        log.exception("batch photo %s failed", name)
        result["error"] = "This photo could not be processed."
    return result
