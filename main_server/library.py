"""The media library (issue 24): keep results, list kept media, search them by KOL or by face, delete.

Routes (docs/api.md, "Library"): ``GET /library`` (kept media, newest first, filtered by ``kind``
and the dates ``since``/``until``, ``YYYY-MM-DD`` in UTC, both days included), ``GET
/library/media/<id>`` (one item and its faces), its files and face crops, ``GET /library/kol``
(``kol``: every face named as that KOL, newest first; video moments give their second),
``POST /library/search`` (``file``: a photo, ``face``: which of its faces, default the largest;
or ``run`` + ``face`` to pick another face of the photo sent before: the library's faces most
like it, nearest first, each with its distance and the answer it was given), the keep buttons
``POST /library/keep/single``, ``/library/keep/batch`` (``run``) and ``/library/keep/video``
(``video``), and deletes of media and of one face.

Who may do what: any member may see and search the library and keep their own results (as they
may read them); deleting media or a face is for whoever kept it and for admins (the rule of
results, :func:`shared.core.owners.may_read`). Rules live in :mod:`shared.library`.
"""
import datetime as dt
import re

import numpy as np
from flask import Blueprint, current_app, flash, redirect, request, send_from_directory, url_for

from shared.core.errors import UserError
from shared.core.storage import atomic_write_bytes, atomic_write_json, read_json
from shared.faces import draw, engine, images
from shared.library import feed, keep
from shared.library.store import KINDS
from shared.recognition import predict
from shared.video import framelog, videos
from shared.web.access import principal
from shared.web.factory import data_path, inbox, library, models, pool, review_queue
from shared.web.replies import reply, wants_json

bp = Blueprint("library", __name__)

#: Most results one search returns (``k``), and the default.
MAX_K, DEFAULT_K = 100, 20
MEDIA_FILE_RE = re.compile(r"^(photo-[0-9]{1,5}\.[a-z]{3,4}|thumb-[0-9]{1,5}\.jpg|video\.[a-z0-9]{2,4})$")
DATE_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
NO_FACE = ("No face was found in '{}'. Search with a photo where the face is larger, sharper and "
           "turned towards the camera.")


# -- helpers ------------------------------------------------------------------------------------
def _day(field):
    """The date in request field ``field`` (``YYYY-MM-DD``, UTC) as a Unix time at its midnight, or ``None``."""
    raw = (request.values.get(field) or "").strip()
    if not raw:
        return None
    try:
        if not DATE_RE.match(raw):
            raise ValueError
        day = dt.datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        raise UserError(f"{field} must be a date written YYYY-MM-DD (got '{raw[:20]}').", 400) from None
    return day.timestamp()


def _filters():
    """``{"kind", "since", "until"}`` of the request (``until``: the end of that day), checked; 400 otherwise."""
    kind = (request.values.get("kind") or "").strip() or None
    if kind is not None and kind not in KINDS:
        raise UserError(f"kind must be one of {', '.join(KINDS)} (got '{kind[:20]}').", 400)
    since, until = _day("since"), _day("until")
    if until is not None:
        until += 86400
    if since is not None and until is not None and since >= until:
        raise UserError("since must be a day before until, or the same day.", 400)
    return {"kind": kind, "since": since, "until": until}


def _names():
    """``{slug: display name}`` of every KOL as named now (the model's names under the pool's)."""
    model = models().current()
    return {**(model.names if model is not None else {}), **pool().display_names()}


def _when(seconds):
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).isoformat(timespec="seconds")


def _shown_face(face, names):
    """A library face for pages and JSON: named as the pool names KOLs now, with its URLs."""
    out = predict.shown({k: face[k] for k in ("box", "identity", "confidence", "known", "kol")}, names)
    out.update(face=face["face"], media=face["media"], kind=face["kind"], media_name=face["media_name"],
               kept_at=_when(face["kept_at"]), photo=face["photo"], t=face["t"], frame=face["frame"],
               track=face["track"], chip_url=url_for("library.face_chip", face_id=face["face"]),
               media_url=url_for("library.media", media_id=face["media"]))
    if "distance" in face:
        out["distance"] = face["distance"]
    if face["file"]:
        out["file_url"] = url_for("library.media_file", media_id=face["media"], name=face["file"])
        if face["t"] is not None:
            out["file_url"] += f"#t={face['t']:.1f}"
    return out


def _shown_media(item):
    out = {k: item[k] for k in ("media", "kind", "name", "owner", "duration_s", "fps", "faces") if k in item}
    out["kept_at"] = _when(item["kept_at"])
    out["url"] = url_for("library.media", media_id=item["media"])
    thumbs = [f["thumb"] for f in item["files"] if f.get("thumb")]
    out["thumb_url"] = url_for("library.media_file", media_id=item["media"], name=thumbs[0]) if thumbs else None
    out["files"] = [{"index": f["index"], "name": f["name"], "width": f["width"], "height": f["height"],
                     "url": url_for("library.media_file", media_id=item["media"], name=f["file"])}
                    for f in item["files"]]
    return out


def _done(endpoint, message, payload, status=200, **args):
    """After a change: JSON clients get ``payload``, browsers a flash and a redirect to ``endpoint``."""
    if wants_json():
        return reply("main/library.html", payload, status=status)
    flash(message)
    return redirect(url_for(endpoint, **args), 303)


def _kept(media_id, created):
    if created:  # its unknown faces join the inbox of unknown people
        feed.feed_inbox(library(), inbox())
    item = library().media(media_id)
    return _done("library.media", ("Kept in the library." if created else "This result was already kept."),
                 {"media": media_id, "url": url_for("library.media", media_id=media_id), "faces": item["faces"]},
                 status=201 if created else 200, media_id=media_id)


def _may_change(media_id):
    """404 for a media id nobody knows; 403 unless the asker kept it or is an admin."""
    if not library().may_change(media_id, principal()):
        raise UserError("Only whoever kept this media, or an admin, may delete it or its faces.", 403)


# -- the library page ---------------------------------------------------------------------------
@bp.get("/library")
def index():
    """Kept media, newest first, with the filters; the search forms."""
    filters = _filters()
    items = [_shown_media(m) for m in library().list_media(**filters)]
    kols = sorted(pool().names().items(), key=lambda kv: kv[1].lower())
    return reply("main/library.html", {"media": items}, kols=kols, kinds=KINDS, form=request.values)


@bp.get("/library/media/<media_id>")
def media(media_id):
    """One kept item: its files and every face with the answer it was given."""
    item = library().media(media_id)
    names = _names()
    faces = [_shown_face(f, names) for f in item["face_list"]]
    payload = dict(_shown_media(item), face_list=faces)
    return reply("main/library_media.html", payload,
                 may_change=library().may_change(media_id, principal()))


@bp.get("/library/media/<media_id>/<name>")
def media_file(media_id, name):
    """A kept photo, video or thumbnail (names checked against :data:`MEDIA_FILE_RE`)."""
    folder = library().folder(media_id)
    if not MEDIA_FILE_RE.match(name) or not (folder / name).is_file():
        raise UserError("There is no such file in this media.", 404)
    return send_from_directory(folder, name, max_age=3600)


@bp.get("/library/faces/<int:face_id>.jpg")
def face_chip(face_id):
    """The aligned crop of one library face (150 px JPEG)."""
    path = library().chip_path(face_id)
    if path is None:
        raise UserError("This face has no crop kept.", 404)
    return send_from_directory(path.parent, path.name, max_age=3600)


# -- keeping ------------------------------------------------------------------------------------
def _result_folder():
    run = request.form.get("run") or ""
    return predict.ResultFolders(data_path("predictions")).folder(run, principal())


@bp.post("/library/keep/single")
def keep_single():
    """Keep a single-photo result (field ``run``) in the library."""
    folder = _result_folder()
    created = keep.kept(folder) is None
    return _kept(keep.keep_single(library(), folder, principal()), created)


@bp.post("/library/keep/batch")
def keep_batch():
    """Keep a finished batch (field ``run``) in the library."""
    folder = _result_folder()
    created = keep.kept(folder) is None
    return _kept(keep.keep_batch(library(), folder, principal()), created)


@bp.post("/library/keep/video")
def keep_video():
    """Keep an uploaded video whose run reached its end (field ``video``) with its per-frame faces."""
    folder = videos.readable_dir(data_path("videos"), request.form.get("video") or "", principal())
    done = read_json(folder / keep.HOLD / "kept.json")
    if done and done.get("media"):
        return _kept(done["media"], False)
    tracks = framelog.read(folder)
    meta = read_json(folder / "meta.json") or {}
    media_id = keep.keep_video(library(), videos.source_path(folder), tracks, principal(),
                               name=meta.get("filename"), names=_names(), source=folder.name)
    (folder / keep.HOLD).mkdir(exist_ok=True)
    atomic_write_json(folder / keep.HOLD / "kept.json", {"media": media_id})
    return _kept(media_id, True)


# -- deleting -----------------------------------------------------------------------------------
@bp.post("/library/media/<media_id>/delete")
def delete_media(media_id):
    """Delete kept media: its files, its faces, their index entries."""
    _may_change(media_id)
    name = library().delete_media(media_id)
    inbox().forget_media(media_id)
    return _done("library.index", f"Deleted {name} from the library.", {"deleted": media_id})


@bp.post("/library/faces/<int:face_id>/delete")
def delete_face(face_id):
    """Delete one face of kept media (it is no longer found by any search)."""
    media_id = library().face(face_id)["media"]
    _may_change(media_id)
    library().delete_face(face_id)
    inbox().forget_faces([str(face_id)])
    return _done("library.media", "Deleted the face from the library.", {"deleted_face": face_id},
                 media_id=media_id)


# -- search -------------------------------------------------------------------------------------
def _kol_slugs(slug):
    """The KOL ``slug`` and the KOLs merged into it (their faces were named with the old slug); 404 when unknown."""
    kols = pool().kols()
    if slug not in kols:
        raise UserError("There is no such KOL: pick one from the list.", 404)
    return [slug] + [src for src, target in pool().merged_into().items() if target == slug and src not in kols]


@bp.get("/library/kol")
def by_kol():
    """Every photo face and video moment named as the KOL ``kol``, newest media first."""
    slug = (request.values.get("kol") or "").strip()
    if not slug:
        raise UserError("Choose a KOL to search for (field 'kol').", 400)
    slugs = _kol_slugs(slug)
    names = _names()
    faces = [_shown_face(f, names) for f in library().by_kol(slugs, **_filters())]
    payload = {"kol": slug, "identity": names.get(slug, slug), "results": faces}
    return reply("main/library_results.html", payload, title=f"{names.get(slug, slug)} in the library",
                 form=request.values)


def _k():
    raw = (request.values.get("k") or "").strip()
    if not raw:
        return DEFAULT_K
    if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= MAX_K:
        raise UserError(f"k must be a whole number from 1 to {MAX_K} (got '{raw[:20]}').", 400)
    return int(raw)


def _query():
    """The photo searched with: a new upload (its faces found, drawn with their numbers, kept in a
    result folder), or the one of field ``run``. ``(run, {"filename", "width", "height", "boxes",
    "embeddings", "faces"})``; 422 when it has no face, 415 for a file that is not a photo."""
    if request.form.get("run"):
        run = request.form["run"]
        query = read_json(predict.ResultFolders(data_path("predictions")).folder(run, principal()) / "search.json")
        if query is None:
            raise UserError("There is no such search photo: send the photo again.", 404)
        return run, query
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise UserError("Choose a photo with the face to search for (form field 'file').", 400)
    if not images.is_image_name(upload.filename):
        raise UserError(f"'{upload.filename[:80]}' is not a photo this tool reads: use "
                        f"{', '.join(images.IMAGE_EXTENSIONS)}.", 415)
    rgb, size = images.load_photo(upload.stream, name=upload.filename[:80])
    found = engine.analyze(rgb)
    if not found:
        raise UserError(NO_FACE.format(upload.filename[:80]), 422)
    model = models().current()
    if model is not None:
        faces, _ = predict.predict_faces(rgb, model, found=found, original_size=size, names=_names(),
                                         negatives=review_queue().negatives())
    else:
        faces = [{"number": n, "box": dict(zip(("top", "right", "bottom", "left"),
                                              (int(v) for v in images.to_original(f.box, rgb.shape, size)))),
                  "identity": None, "confidence": 0.0, "known": False, "kol": None}
                 for n, f in enumerate(found, 1)]
    run, folder = predict.ResultFolders(data_path("predictions"),
                                        keep_s=current_app.config["PREDICTION_MAX_AGE_S"]).new(owner=principal())
    drawn = draw.labelled_boxes(np.array(rgb, copy=True), [(f.box, str(n), False) for n, f in enumerate(found, 1)])
    atomic_write_bytes(folder / "annotated.jpg", images.encode_jpeg(drawn))
    query = {"filename": upload.filename[:80], "width": size[0], "height": size[1], "faces": faces,
             "embeddings": [[float(v) for v in f.embedding] for f in found]}
    atomic_write_json(folder / "search.json", query)
    return run, query


def _face_number(count):
    raw = (request.form.get("face") or "").strip()
    if not raw:
        return 1
    if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= count:
        raise UserError(f"face must be the number of a face on the photo, from 1 to {count} (got '{raw[:20]}').", 400)
    return int(raw)


@bp.post("/library/search")
def by_face():
    """The library's faces most like one face of a photo, nearest first (within dlib's same-person
    distance, :data:`shared.faces.engine.SAME_PERSON_DISTANCE`), known or not."""
    k, filters = _k(), _filters()
    run, query = _query()
    number = _face_number(len(query["faces"]))
    names = _names()
    hits = library().by_face(np.array(query["embeddings"][number - 1]), k,
                             max_distance=engine.SAME_PERSON_DISTANCE, **filters)
    faces = [predict.shown(f, names) for f in query["faces"]]
    payload = {"face": faces[number - 1], "faces": faces, "number": number, "run": run,
               "max_distance": engine.SAME_PERSON_DISTANCE,
               "results": [_shown_face(f, names) for f in hits]}
    return reply("main/library_results.html", payload, title=f"Face {number} of {query['filename']} in the library",
                 image_url=url_for("predict.prediction_file", run=run, name="annotated.jpg"), form=request.values,
                 size=(query["width"], query["height"]))
