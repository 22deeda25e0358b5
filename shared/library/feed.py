"""What keeping media feeds: the unknown inbox, and the library from a finished video analysis.

- :func:`feed_inbox`: the library's faces kept as not known that the inbox has not seen yet
  (face ids above the highest library face id in it, oldest first) join the inbox
  (:meth:`shared.library.unknowns.Inbox.add_faces`), each with its chip and where it was seen;
  called after every keep.
- :func:`forget_kol`: a KOL was deleted: its library faces are not known any more
  (:meth:`shared.library.store.Library.forget_kol`) and join the inbox as unknown people, like
  any other unknown face of the library (their ids are older, so :func:`feed_inbox` would not see them).
- :func:`keep_analysed`: a video whose analysis finished is kept in the library with its per-frame
  data (:func:`shared.library.keep.keep_video`) for its uploader, and its unknown faces go to the inbox.
"""
from pathlib import Path

from shared.core import config, owners
from shared.library.keep import keep_video
from shared.library.store import Library
from shared.library.unknowns import Inbox
from shared.video import framelog


def feed_inbox(library, inbox):
    """Add ``library``'s (:class:`Library`) new not-known faces to ``inbox`` (:class:`Inbox`). Returns how many."""
    seen = [int(f) for f in inbox.face_ids() if str(f).isdigit()]
    return _add(library, inbox, library.unknown_faces(after_id=max(seen, default=0)))


def forget_kol(library, inbox, slug):
    """The KOL ``slug`` was deleted: no face of ``library`` is named as them any more, and those faces join
    ``inbox``. Returns how many faces changed."""
    ids = library.forget_kol(slug)
    if ids:
        _add(library, inbox, library.unknown_faces(ids=ids))
    return len(ids)


def _add(library, inbox, rows):
    """Add the library faces ``rows`` (``[(face dict, embedding)]``) to ``inbox``, each with its chip and where
    it was seen. Returns how many were added."""
    faces = []
    for face, embedding in rows:
        chip = library.chip_path(face["face"])
        source = {"media": face["media"], "name": face["media_name"],
                  "box": [face["box"][k] for k in ("top", "right", "bottom", "left")]}
        if face.get("t") is not None:
            source["t"] = float(face["t"])
        elif face.get("photo") is not None:
            source["photo"] = int(face["photo"])
        faces.append((str(face["face"]), embedding, chip, source))
    return inbox.add_faces(faces)["added"] if faces else 0


def keep_analysed(data_dir, folder, video, source, names):
    """Keep the analysed ``video`` (its entry in the analysis record, whose folder under the analysis
    ``folder`` holds its per-frame data) in the library of ``data_dir``: the uploaded file ``source``, the KOLs'
    ``names`` ``{slug: display name}``, kept for the analysis's uploader (``owner.json``); then feed the inbox.
    Returns the library media id, or ``None`` when the analysis has no owner record or no source file."""
    owner = owners.read(folder)
    if owner is None or source is None:
        return None
    settings = config.load({"DATA_DIR": str(data_dir)})
    library = Library(settings["DATA_DIR"], settings["LIBRARY_DB_URL"])
    media = keep_video(library, source, framelog.read(Path(folder) / video["video"]), owners.Recorded(owner),
                       name=video.get("filename"), names=names, source=video["video"])
    feed_inbox(library, Inbox(settings["DATA_DIR"]))
    return media
