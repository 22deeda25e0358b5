"""Uploaded videos on disk: ids, files, status, and the cleanup rule (playing them: :mod:`shared.video.streaming`).

Layout under ``data/videos/``::

    <id>/source<ext>   the uploaded file (``ext`` one of shared.faces.frames.VIDEO_EXTENSIONS)
    <id>/meta.json     {"video", "filename", "fps", "frames", "width", "height", "size", "uploaded"}
    <id>/owner.json    who uploaded it (:mod:`shared.core.owners`)
    <id>/status.json   the latest recognition state, the JSON of ``GET /?video=<id>`` (see docs/api.md)
    <id>/run           token of the newest stream of this video (only it writes status.json)
    <id>/summary.json  the status of the last stream that reached the end

An id is 16 lower-case hex digits (:data:`VIDEO_ID_RE`); every function that takes
an id from a request checks it with :func:`video_dir` before touching the disk, so
no path ever comes from a URL. A video is for the one who uploaded it (and admins):
:func:`readable_dir` answers anyone else exactly as for an unknown id.

Cleanup rule (swept on every upload, :func:`sweep`): a video is deleted when it is
older than :data:`MAX_AGE_S` (24 hours), or when more than :data:`KEEP_NEWEST` (20)
videos are stored, the oldest beyond the newest 20 go (the servers' ``VIDEO_MAX_AGE_S`` and
``VIDEO_KEEP`` settings; 0 turns that limit off). A video being streamed right
now (its status says ``streaming`` and was written in the last
:data:`BUSY_S` seconds) is never deleted. Folders left by an interrupted upload
(no ``meta.json``) are deleted once older than :data:`BUSY_S`.
"""
import os
import secrets
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

from shared.core import config, owners
from shared.core.errors import UserError
from shared.core.ids import VIDEO_ID_RE
from shared.core.storage import atomic_write_json, read_json
from shared.faces import frames

KEEP_NEWEST = config.DEFAULTS["VIDEO_KEEP"]
MAX_AGE_S = config.DEFAULTS["VIDEO_MAX_AGE_S"]
BUSY_S = 120
STATES = ("pending", "streaming", "done", "failed")
#: The answer for a well-formed id that names no video this reader may watch.
NO_SUCH_VIDEO = ("No such video (it may have been cleaned up: videos are kept for 24 hours, "
                 "20 at most). Please upload it again.")


def new_id():
    """A fresh random video id (16 hex digits)."""
    return secrets.token_hex(8)


def video_dir(root, video_id):
    """The folder of an existing video under ``root`` (``data/videos``).

    Raises :class:`UserError` 404 when the id is malformed or unknown (checked
    with :data:`VIDEO_ID_RE` before any file access).
    """
    if not isinstance(video_id, str) or not VIDEO_ID_RE.match(video_id):
        raise UserError("No such video: the link should end with ?video= and a 16-character id.", 404)
    folder = Path(root) / video_id
    if not (folder / "meta.json").is_file():
        raise UserError(NO_SUCH_VIDEO, 404)
    return folder


def readable_dir(root, video_id, reader):
    """:func:`video_dir`, if the principal ``reader`` may watch the video (its uploader, or an admin:
    :func:`shared.core.owners.may_read`); someone else's video is a 404 word for word like an unknown id."""
    folder = video_dir(root, video_id)
    if not owners.may_read(folder, reader):
        raise UserError(NO_SUCH_VIDEO, 404)
    return folder


def source_path(folder):
    """The uploaded file inside a video folder (``source.<ext>``), or ``None``."""
    for ext in frames.VIDEO_EXTENSIONS:
        path = Path(folder) / f"source{ext}"
        if path.is_file():
            return path
    return None


def store(root, upload, keep=KEEP_NEWEST, max_age_s=MAX_AGE_S, owner=None):
    """Save an uploaded video (a Werkzeug ``FileStorage``) under a new id and check it decodes.

    Checks that the part has a name with an allowed extension, streams it to
    ``<root>/<id>/source<ext>`` (never held in memory), probes it with
    :func:`shared.faces.frames.probe`, writes the owner record of ``owner`` (the uploader,
    a :class:`shared.web.auth.Principal`; ``None``: none, so only admins may watch it),
    ``meta.json`` and a ``pending`` status, then applies the cleanup rule (:func:`sweep`).
    Returns the metadata dict.

    Raises :class:`UserError` (400/415/422) for a missing part, a wrong extension,
    an empty file or one OpenCV cannot decode; nothing of it is left on disk.
    """
    from werkzeug.utils import secure_filename

    if upload is None or not upload.filename:
        raise UserError("Choose a video file to upload (field 'file').", 400)
    original = upload.filename
    if not frames.is_video_name(original):
        raise UserError(f"'{original}' is not a video this tool accepts: use "
                        f"{', '.join(frames.VIDEO_EXTENSIONS)}.", 415)
    ext = os.path.splitext(original)[1].lower()
    filename = secure_filename(original) or f"video{ext}"
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    video_id = new_id()
    folder = root / video_id
    folder.mkdir()
    try:
        target = folder / f"source{ext}"
        tmp = folder / f".upload{ext}"
        upload.save(str(tmp))
        os.replace(tmp, target)
        info = frames.probe(target, name=original)
        meta = {"video": video_id, "filename": filename, "fps": round(info.fps, 3), "frames": info.frames,
                "width": info.width, "height": info.height, "size": target.stat().st_size,
                "uploaded": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        atomic_write_json(folder / "status.json", initial_status(meta))
        if owner is not None:
            owners.write(folder, owner)
        atomic_write_json(folder / "meta.json", meta)  # last: a folder without it is not a video yet
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    sweep(root, keep=keep, max_age_s=max_age_s, spare=video_id)
    return meta


def initial_status(meta):
    """The status of a video nobody has watched yet."""
    return {"video": meta["video"], "state": "pending", "frames": int(meta["frames"]),
            "fps": float(meta["fps"]), "processed": 0, "appearances": [], "error": None}


def read_meta(folder):
    """``meta.json`` of a video folder."""
    return read_json(Path(folder) / "meta.json")


def read_status(folder):
    """The latest status of a video (``pending`` when never streamed)."""
    folder = Path(folder)
    status = read_json(folder / "status.json")
    return status if status else initial_status(read_meta(folder))


def write_status(folder, status, token=None):
    """Write ``status`` atomically, if ``token`` is the newest stream of the video (or no token).

    Returns ``False`` (and writes nothing) when a newer stream took over or the video was deleted.
    """
    folder = Path(folder)
    if token is not None:
        try:
            if (folder / "run").read_text() != token:
                return False
        except OSError:
            return False
    try:
        atomic_write_json(folder / "status.json", status)
    except OSError:  # cleaned up while streaming
        return False
    return True


def claim(folder):
    """Mark a new stream of the video as the newest one; returns its token for :func:`write_status`."""
    token = secrets.token_hex(8)
    try:
        from shared.core.storage import atomic_write_bytes

        atomic_write_bytes(Path(folder) / "run", token.encode())
    except OSError:
        pass
    return token


def _busy(folder, now):
    path = folder / "status.json"
    try:
        if now - path.stat().st_mtime > BUSY_S:
            return False
    except OSError:
        return False
    return (read_json(path) or {}).get("state") == "streaming"


def sweep(root, keep=KEEP_NEWEST, max_age_s=MAX_AGE_S, spare=None, now=None):
    """Apply the cleanup rule (module docstring) to ``root``; returns the ids deleted.

    keep: videos kept, the newest (0: no limit); max_age_s: older ones go (0: no limit); the
    servers pass their ``VIDEO_KEEP`` and ``VIDEO_MAX_AGE_S`` settings.
    spare: an id never deleted (the upload that triggered the sweep).
    """
    root = Path(root)
    now = time.time() if now is None else now
    keep, max_age_s = keep or float("inf"), max_age_s or float("inf")
    if not root.is_dir():
        return []
    videos, deleted = [], []
    for entry in root.iterdir():
        if not entry.is_dir() or not VIDEO_ID_RE.match(entry.name) or entry.name == spare:
            continue
        meta = entry / "meta.json"
        try:
            mtime = meta.stat().st_mtime
        except OSError:  # interrupted upload
            try:
                if now - entry.stat().st_mtime > BUSY_S:
                    shutil.rmtree(entry, ignore_errors=True)
                    deleted.append(entry.name)
            except OSError:
                pass
            continue
        videos.append((mtime, entry))
    videos.sort(key=lambda v: v[0], reverse=True)  # newest first
    room = keep - (1 if spare else 0)
    for rank, (mtime, entry) in enumerate(videos):
        if (rank >= room or now - mtime > max_age_s) and not _busy(entry, now):
            shutil.rmtree(entry, ignore_errors=True)
            deleted.append(entry.name)
    return deleted


# -- status of a video being watched ------------------------------------------------

#: A ``streaming`` status not rewritten for this long belongs to a stream that died.
STALE_S = 15


def current_status(folder):
    """:func:`read_status`, with a ``streaming`` state nobody updates any more reported as ``pending``."""
    folder = Path(folder)
    status = read_status(folder)
    if status.get("state") == "streaming":
        try:
            stale = time.time() - (folder / "status.json").stat().st_mtime > STALE_S
        except OSError:
            stale = True
        if stale:
            status = dict(status, state="pending")
    return status
