"""Keeping a result in the library: a single photo's, a batch's, a finished video run's.

A result folder (``DATA_DIR/predictions/<run>/``) holds what keeping it needs in ``keep/``,
written when the result is made: :func:`hold_photo` (the photo as uploaded and, per face, its
embedding and chip, ``faces.npz``) and :func:`hold_batch` (hard links to the staged photos,
which the batch deletes when it is done). :func:`keep_single` and :func:`keep_batch` turn that
into one library media item (:meth:`shared.library.store.Library.add`) with the answers the
result gave (its ``annotated.faces.json`` or ``results.json``); ``keep/kept.json``
(``{"media": id}``) then says it is kept, so keeping twice gives the same media.

:func:`keep_video` keeps a video from its file and its per-frame data (the framelog format,
:mod:`shared.video.framelog`): one face row per track per ``every_s`` seconds, each embedded
from its frame. Housekeeping's 24 h rule still removes the result folder; the library's copy
stays until deleted or ``LIBRARY_RETENTION_DAYS`` pass.
"""
from pathlib import Path

import numpy as np

from shared.core.errors import UserError
from shared.core.storage import atomic_write, atomic_write_bytes, atomic_write_json, private_folder, read_json
from shared.faces import engine, frames, images
from shared.library.store import put_file
from shared.recognition import predict

#: The folder inside a result folder that holds what keeping it needs.
HOLD = "keep"
NOT_KEEPABLE = ("This result cannot be kept in the library: it was made before results could be kept, "
                "or it did not finish. Run it again, then keep it.")


def kept(folder):
    """The media id a result was kept as, or ``None``."""
    return (read_json(Path(folder) / HOLD / "kept.json") or {}).get("media")


def keepable(folder):
    """True when the result in ``folder`` holds what keeping it needs (and is not kept yet)."""
    hold = Path(folder) / HOLD
    return kept(folder) is None and ((hold / "faces.npz").is_file() or (hold / "photos.json").is_file())


def _suffix(name):
    suffix = Path(name).suffix.lower()
    return suffix if suffix in images.IMAGE_EXTENSIONS else ".jpg"


def hold_photo(folder, data, name, found):
    """Keep in ``folder/keep/`` what keeping a single-photo result needs: ``data`` (the photo's bytes
    as uploaded) and the embeddings and chips of ``found`` (:class:`shared.faces.engine.Face`, in
    the order of the result's faces)."""
    hold = private_folder(Path(folder) / HOLD)
    photo = f"photo{_suffix(name)}"
    atomic_write_bytes(hold / photo, data)
    atomic_write(hold / "faces.npz", lambda fh: np.savez_compressed(
        fh, embeddings=np.array([f.embedding for f in found], dtype=np.float32).reshape(-1, 128),
        chips=np.array([f.chip for f in found], dtype=np.uint8).reshape(-1, engine.CHIP_SIZE, engine.CHIP_SIZE, 3)))
    atomic_write_json(hold / "photo.json", {"name": name, "file": photo})


def hold_batch(folder, rows, files):
    """Keep hard links (copies across disks) to a batch's staged photos in ``folder/keep/``, before
    the batch runs: ``rows`` and ``files`` as :func:`shared.recognition.batch.stage` returns them."""
    hold = private_folder(Path(folder) / HOLD)
    held = {}
    for position, path in files.items():
        target = f"photo-{position}{_suffix(rows[position]['filename'])}"
        put_file(hold / target, path)
        held[str(position)] = target
    atomic_write_json(hold / "photos.json", {"photos": held})


def _face(obj, embedding, chip, photo):
    box = obj["box"]
    return {"photo": photo, "box": (box["top"], box["right"], box["bottom"], box["left"]),
            "identity": obj.get("identity"), "kol": obj.get("kol") if obj.get("known") else None,
            "confidence": obj.get("confidence", 0.0), "known": bool(obj.get("known")),
            "embedding": embedding, "chip": chip}


def _thumb(rgb):
    return images.encode_jpeg(predict.thumbnail(rgb), quality=82)


def _done(folder, media_id):
    atomic_write_json(Path(folder) / HOLD / "kept.json", {"media": media_id})
    return media_id


def keep_single(library, folder, owner):
    """Keep the single-photo result in ``folder`` for ``owner``; returns the media id (the same one
    when it is kept already). 409 when the result holds nothing to keep."""
    if kept(folder):
        return kept(folder)
    hold = Path(folder) / HOLD
    record = read_json(Path(folder) / "annotated.faces.json")
    held = read_json(hold / "photo.json") or {}
    photo = hold / held["file"] if held.get("file") else None
    if record is None or photo is None or not photo.is_file() or not (hold / "faces.npz").is_file():
        raise UserError(NOT_KEEPABLE, 409)
    arrays = np.load(hold / "faces.npz", allow_pickle=False)
    name = held.get("name") or photo.name
    rgb, size = images.load_photo(photo, name=name)
    faces = [_face(obj, e, c, 1) for obj, e, c in zip(record["faces"], arrays["embeddings"], arrays["chips"])]
    media_id = library.add("photo", name, owner,
                           [(f"photo-1{photo.suffix}", photo, {"name": name, "width": size[0], "height": size[1],
                                                                "thumb": _thumb(rgb)})], faces)
    return _done(folder, media_id)


def keep_batch(library, folder, owner):
    """Keep the finished batch in ``folder`` for ``owner`` (its photos with faces analysed again, named
    as the batch named them); returns the media id. 409 while it runs or when it holds nothing to keep."""
    if kept(folder):
        return kept(folder)
    hold = Path(folder) / HOLD
    held = (read_json(hold / "photos.json") or {}).get("photos")
    stored = read_json(Path(folder) / "results.json")
    if held is None or stored is None:
        raise UserError(NOT_KEEPABLE, 409)
    files, faces = [], []
    for position, row in enumerate(stored["payload"]["results"]):
        target = held.get(str(position))
        if target is None or not (hold / target).is_file() or row.get("error"):
            continue
        rgb, size = images.load_photo(hold / target, name=row["filename"])
        found = engine.analyze(rgb)
        number = len(files) + 1
        originals = [images.to_original(f.box, rgb.shape, size) for f in found]
        answers = {tuple(o["box"][k] for k in ("top", "right", "bottom", "left")): o for o in row["faces"]}
        for f, box in zip(found, originals):
            obj = answers.get(tuple(int(v) for v in box))
            if obj is not None:
                faces.append(_face(obj, f.embedding, f.chip, number))
        files.append((f"photo-{number}{Path(target).suffix}", hold / target,
                      {"name": row["filename"], "width": size[0], "height": size[1], "thumb": _thumb(rgb)}))
    if not files:
        raise UserError("This batch has no photo that could be named, so there is nothing to keep.", 409)
    name = files[0][2]["name"] if len(files) == 1 else f"{files[0][2]['name']} and {len(files) - 1} more"
    media_id = library.add("batch", name, owner, files, faces, source=Path(folder).name)
    return _done(folder, media_id)


def sample_moments(tracks, every_s=1.0):
    """The moments of a framelog to keep: for each track, its first face in each ``every_s``-second
    window. Returns ``{frame index: [(face dict of the framelog, t seconds)]}``, frames in order."""
    chosen, seen = {}, set()
    for row in tracks.get("frames", []):
        for face in row["faces"]:
            key = (face["track"], int(float(row["t"]) // every_s))
            if key not in seen:
                seen.add(key)
                chosen.setdefault(int(row["frame"]), []).append((face, float(row["t"])))
    return dict(sorted(chosen.items()))


def _frames_at(path, wanted):
    """Yield ``(index, rgb)`` for the frame indices in ``wanted`` (sorted), decoding only those."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        index, targets = 0, iter(wanted)
        target = next(targets, None)
        while target is not None:
            if not cap.grab():
                return
            if index == target:
                ok, frame = cap.retrieve()
                if not ok:
                    return
                yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                target = next(targets, None)
            index += 1
    finally:
        cap.release()


def keep_video(library, video_path, tracks, owner, name=None, names=None, every_s=1.0, source=None):
    """Keep a video in the library with the faces of its per-frame data; returns the media id.

    library: the :class:`shared.library.store.Library`; video_path: the video file (it is
    hard-linked, or copied, into the library); tracks: its per-frame data as a dict in the
    framelog format (:mod:`shared.video.framelog`: ``{"video", "fps", "frame_count", "frames":
    [{"frame", "t", "faces": [{"box": [top, right, bottom, left] in the video's pixels,
    "track", "identity", "confidence", "known", "label"}]}]}``, ``t`` in seconds); owner: the
    keeper (:class:`shared.web.auth.Principal`); name: the video's name as uploaded (default the
    file's); names: ``{slug: display name}`` of the KOLs now, to record each named face's KOL slug
    (``identity`` is a display name); every_s: one face row per track per this many seconds
    (the track's first face in each window); source: the video id it came from.
    Every kept face is embedded again from its frame (dlib, in this process), its chip kept.
    Raises :class:`shared.faces.frames.VideoError` for a file that is not a video.
    """
    info = frames.probe(video_path, name)
    by_name = {display: slug for slug, display in (names or {}).items()}
    moments = sample_moments(tracks, every_s)
    faces, thumb = [], None
    for index, rgb in _frames_at(video_path, list(moments)):
        picked = moments[index]
        found = engine.analyze(rgb, boxes=[tuple(int(v) for v in f["box"]) for f, _ in picked], tight=False)
        if thumb is None:
            thumb = _thumb(rgb)
        for (face, t), got in zip(picked, found):
            identity = face.get("identity") if face.get("known") else None
            faces.append({"t": round(t, 3), "frame": index, "track": int(face["track"]), "box": face["box"],
                          "identity": identity, "kol": by_name.get(identity) if identity else None,
                          "confidence": face.get("confidence", 0.0), "known": bool(face.get("known")),
                          "embedding": got.embedding, "chip": got.chip})
    name = name or Path(video_path).name
    info_file = {"name": name, "width": info.width, "height": info.height, "thumb": thumb}
    return library.add("video", name, owner, [(f"video{Path(video_path).suffix.lower()}", Path(video_path), info_file)],
                       faces, duration_s=round(info.duration, 3), fps=info.fps, source=source)
