"""Kept media and their faces: the library's two tables, its files, and the face index kept with them.

Tables (SQLAlchemy Core, :mod:`shared.core.db`):

- ``media``: ``id`` (16 hex digits), ``kind`` (``photo`` | ``batch`` | ``video``), ``name`` (as
  uploaded), ``owner`` (the keeper's actor) and ``owner_record`` (:func:`shared.core.owners.record`),
  ``kept_at`` (Unix time, seconds), ``folder`` (``media/<id>`` under ``DATA_DIR/library/``),
  ``files`` (JSON list, one per photo or the video: ``{"index", "file", "name", "width", "height"}``,
  ``index`` from 1), ``duration_s`` and ``fps`` (videos), ``source`` (the result run or video id kept).
- ``faces``: ``id`` (integer, never reused: it is the face's key in the index), ``media_id``,
  ``photo`` (1-based index of the photo in its media; ``None`` for a video), ``t`` (seconds from the
  start) and ``frame`` (video), ``track`` (video), ``top``/``right``/``bottom``/``left`` (the box in the
  pixels of the photo or video as kept), the answer given when it was kept (``identity`` display
  name, ``kol`` slug, ``confidence``, ``known``), ``embedding`` (128 float32, little-endian bytes).

Files under ``DATA_DIR/library/``: ``media/<id>/`` holds the kept photos or video (hard links to the
result's files when they are on the same disk, else copies), ``owner.json``, ``thumb-<n>.jpg``
(photos) and ``chips/<face id>.jpg`` (each face's aligned 150 px crop: what a page shows and what the
unknown inbox reads, :meth:`Library.chip_path`); ``index/`` holds the face index
(:mod:`shared.library.index`).

Writes. Keeping one media item is one database transaction: its rows are inserted, its files
written, its faces indexed and only then committed; any failure (a full disk among them: 507)
rolls the rows back and removes its folder, so nothing half-kept remains and nothing kept
before is touched. Deleting (media, one face, a KOL's names) commits first, then removes the
faces from the index; searches only return faces still in the table, so a face is gone from
every answer the moment its row is.
"""
import contextlib
import secrets
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from shared.core import db, owners
from shared.core.errors import UserError
from shared.core.ids import HEX16_RE
from shared.core.storage import atomic_write, atomic_write_bytes, private_folder
from shared.library.index import open_index

KINDS = ("photo", "batch", "video")
#: The sentence for a media id that names nothing in the library.
NO_SUCH_MEDIA = "There is no such media in the library (it may have been deleted)."
NO_SUCH_FACE = "There is no such face in the library (it may have been deleted)."

_tables = None
_created = set()
_tables_lock = threading.Lock()


def tables():
    """``(metadata, media, faces)``: the library's SQLAlchemy tables (built once per process)."""
    global _tables
    with _tables_lock:
        if _tables is None:
            import sqlalchemy as sa

            meta = sa.MetaData()
            media = sa.Table(
                "media", meta,
                sa.Column("id", sa.String(16), primary_key=True),
                sa.Column("kind", sa.String(8), nullable=False),
                sa.Column("name", sa.String(255), nullable=False),
                sa.Column("owner", sa.String(255), nullable=False),
                sa.Column("owner_record", sa.JSON, nullable=False),
                sa.Column("kept_at", sa.Float, nullable=False, index=True),
                sa.Column("folder", sa.String(64), nullable=False),
                sa.Column("files", sa.JSON, nullable=False),
                sa.Column("duration_s", sa.Float),
                sa.Column("fps", sa.Float),
                sa.Column("source", sa.String(64)))
            faces = sa.Table(
                "faces", meta,
                sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
                sa.Column("media_id", sa.String(16), sa.ForeignKey("media.id", ondelete="CASCADE"),
                          nullable=False, index=True),
                sa.Column("photo", sa.Integer),
                sa.Column("t", sa.Float),
                sa.Column("frame", sa.Integer),
                sa.Column("track", sa.Integer),
                sa.Column("top", sa.Integer, nullable=False),
                sa.Column("right", sa.Integer, nullable=False),
                sa.Column("bottom", sa.Integer, nullable=False),
                sa.Column("left", sa.Integer, nullable=False),
                sa.Column("identity", sa.String(255)),
                sa.Column("kol", sa.String(255), index=True),
                sa.Column("confidence", sa.Float, nullable=False),
                sa.Column("known", sa.Boolean, nullable=False),
                sa.Column("embedding", sa.LargeBinary, nullable=False),
                sqlite_autoincrement=True)  # ids never reused: they are the index's keys
            _tables = meta, media, faces
    return _tables


def new_media_id():
    """A fresh random media id (16 hex digits)."""
    return secrets.token_hex(8)


def _box(row):
    return {"top": row.top, "right": row.right, "bottom": row.bottom, "left": row.left}


def _face_file(row):
    """The name of the file a face is in (its photo, or the video), inside its media's folder."""
    files = row.files or []
    position = (row.photo or 1) - 1
    return files[position]["file"] if 0 <= position < len(files) else None


def _face_dict(row):
    """A face row (joined with its media) as the views use it (``file``: the photo or video it is in)."""
    t = row._mapping["t"]  # Row.t is a Row's own attribute (itself as a tuple)
    return {"face": row.id, "file": _face_file(row), "media": row.media_id, "kind": row.kind, "media_name": row.name,
            "kept_at": row.kept_at, "photo": row.photo, "t": t, "frame": row.frame, "track": row.track,
            "box": _box(row), "identity": row.identity, "kol": row.kol, "confidence": row.confidence,
            "known": bool(row.known)}


def _media_dict(row, face_count=None):
    out = {"media": row.id, "kind": row.kind, "name": row.name, "owner": row.owner, "kept_at": row.kept_at,
           "files": row.files, "duration_s": row.duration_s, "fps": row.fps, "source": row.source}
    if face_count is not None:
        out["faces"] = face_count
    return out


def put_file(path, source):
    """Write ``source`` (bytes, or the path of a file: hard-linked, or copied atomically) to ``path``."""
    if isinstance(source, (bytes, bytearray)):
        atomic_write_bytes(path, bytes(source))
        return
    try:
        Path(path).hardlink_to(source)
    except OSError:
        with open(source, "rb") as src:
            atomic_write(path, lambda fh: shutil.copyfileobj(src, fh, 1024 * 1024))


class Library:
    """The library of one data folder: ``DATA_DIR/library/`` and the database at ``db_url``
    (``LIBRARY_DB_URL``; empty: SQLite in ``DATA_DIR/instance``)."""

    def __init__(self, data_dir, db_url=""):
        self.root = Path(data_dir) / "library"
        self.media_root = self.root / "media"
        self.index = open_index(self.root / "index")
        self.engine = db.engine(db.url(data_dir, db_url))
        self.meta, self.media_table, self.faces_table = tables()
        with _tables_lock:
            if self.engine.url not in _created:
                with db.disk_full_as_507():
                    self.meta.create_all(self.engine)
                _created.add(self.engine.url)

    # -- keeping ---------------------------------------------------------------------------------
    def add(self, kind, name, owner, files, faces, duration_s=None, fps=None, source=None, now=None):
        """Keep one media item; returns its id.

        kind: one of :data:`KINDS`; name: its name as uploaded; owner: the keeper
        (:class:`shared.web.auth.Principal`); files: ``[(file name in the folder, bytes or a path,
        info)]`` in order, ``info`` ``{"name", "width", "height"}`` and optionally ``"thumb"`` (JPEG
        bytes, written as ``thumb-<index>.jpg``);
        faces: dicts ``{"photo"|"t"+"frame"+"track", "box": (top, right, bottom, left),
        "identity", "kol", "confidence", "known", "embedding": 128 floats, "chip": RGB array or None}``.
        One transaction: all of it is kept, or nothing (module docstring); a full disk is a 507.
        """
        from shared.faces import images

        if kind not in KINDS:
            raise ValueError(f"unknown media kind {kind!r}")
        media_id = new_media_id()
        folder = self.media_root / media_id
        listed, indexed = [], []
        try:
            with db.disk_full_as_507(), self.engine.begin() as conn:
                private_folder(folder / "chips")
                owners.write(folder, owner)
                for position, (file_name, src, info) in enumerate(files, 1):
                    put_file(folder / file_name, src)
                    if info.get("thumb"):
                        atomic_write_bytes(folder / f"thumb-{position}.jpg", info["thumb"])
                    listed.append({"index": position, "file": file_name, "name": info.get("name", file_name),
                                   "width": info.get("width"), "height": info.get("height"),
                                   "thumb": f"thumb-{position}.jpg" if info.get("thumb") else None})
                record = owners.record(owner)
                conn.execute(self.media_table.insert().values(
                    id=media_id, kind=kind, name=name[:255], owner=record["actor"], owner_record=record,
                    kept_at=time.time() if now is None else now, folder=f"media/{media_id}", files=listed,
                    duration_s=duration_s, fps=fps, source=source))
                ids, vectors = [], []
                for face in faces:
                    vector = np.asarray(face["embedding"], dtype=np.float32).reshape(128)
                    top, right, bottom, left = (int(v) for v in face["box"])
                    face_id = conn.execute(self.faces_table.insert().values(
                        media_id=media_id, photo=face.get("photo"), t=face.get("t"), frame=face.get("frame"),
                        track=face.get("track"), top=top, right=right, bottom=bottom, left=left,
                        identity=face.get("identity"), kol=face.get("kol"),
                        confidence=float(face.get("confidence", 0.0)), known=bool(face.get("known")),
                        embedding=vector.astype("<f4").tobytes())).inserted_primary_key[0]
                    if face.get("chip") is not None:
                        atomic_write_bytes(folder / "chips" / f"{face_id}.jpg", images.encode_jpeg(face["chip"]))
                    ids.append(face_id)
                    vectors.append(vector)
                self.index.add(ids, np.array(vectors, dtype=np.float32).reshape(-1, 128))
                indexed = ids
        except BaseException:
            if indexed:  # the commit failed after the index took them: take them out again if the disk lets us
                with contextlib.suppress(Exception):
                    self.index.remove(indexed)
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return media_id

    # -- reading ---------------------------------------------------------------------------------
    def _media_row(self, conn, media_id):
        if not isinstance(media_id, str) or not HEX16_RE.match(media_id):
            raise UserError(NO_SUCH_MEDIA, 404)
        row = conn.execute(self.media_table.select().where(self.media_table.c.id == media_id)).first()
        if row is None:
            raise UserError(NO_SUCH_MEDIA, 404)
        return row

    def media(self, media_id):
        """One media item (a dict: :func:`_media_dict` plus ``"face_list"``, its faces in order); 404 when unknown."""
        with self.engine.connect() as conn:
            row = self._media_row(conn, media_id)
            faces = conn.execute(self._joined().where(self.faces_table.c.media_id == media_id)
                                 .order_by(self.faces_table.c.photo, self.faces_table.c.t, self.faces_table.c.id)).all()
        out = _media_dict(row, len(faces))
        out["face_list"] = [_face_dict(f) for f in faces]
        return out

    def folder(self, media_id):
        """The folder of a media item (checked: 404 when unknown)."""
        with self.engine.connect() as conn:
            self._media_row(conn, media_id)
        return self.media_root / media_id

    def list_media(self, kind=None, since=None, until=None):
        """Media newest first, filtered by ``kind`` and ``kept_at`` in ``[since, until)`` (Unix times)."""
        import sqlalchemy as sa

        m, f = self.media_table, self.faces_table
        query = (sa.select(m, sa.func.count(f.c.id).label("face_count")).select_from(m.outerjoin(f))
                 .group_by(m.c.id).order_by(m.c.kept_at.desc()))
        query = self._filtered(query, kind, since, until)
        with self.engine.connect() as conn:
            return [_media_dict(r, r.face_count) for r in conn.execute(query)]

    def _filtered(self, query, kind=None, since=None, until=None):
        """``query`` limited to media of ``kind`` kept in ``[since, until)`` (Unix times; ``None``: no limit)."""
        m = self.media_table
        if kind:
            query = query.where(m.c.kind == kind)
        if since is not None:
            query = query.where(m.c.kept_at >= since)
        if until is not None:
            query = query.where(m.c.kept_at < until)
        return query

    def _joined(self):
        import sqlalchemy as sa

        m, f = self.media_table, self.faces_table
        return sa.select(f, m.c.kind, m.c.name, m.c.kept_at, m.c.files).select_from(f.join(m))

    def by_kol(self, slugs, kind=None, since=None, until=None):
        """Every face named as one of the KOLs ``slugs`` (a KOL's slug and those merged into it):
        newest media first, then in the media's order."""
        m, f = self.media_table, self.faces_table
        query = self._joined().where(f.c.kol.in_(list(slugs)), f.c.known.is_(True))
        query = self._filtered(query, kind, since, until)
        query = query.order_by(m.c.kept_at.desc(), m.c.id, f.c.photo, f.c.t, f.c.id)
        with self.engine.connect() as conn:
            return [_face_dict(r) for r in conn.execute(query)]

    def by_face(self, vector, k, max_distance=None, kind=None, since=None, until=None):
        """The faces nearest to ``vector`` (128 floats), nearest first: ``[(face dict with "distance")]``.

        Up to ``k`` faces; ``max_distance`` (Euclidean) drops farther ones. The filters (and faces
        the index holds but the table does not, left by a keep whose commit failed) apply after the
        index's search, which looks 4 times further each time until ``k`` faces pass or none is left."""
        f = self.faces_table
        wanted = k
        while True:
            hits = self.index.search(vector, wanted)
            near = [(i, d) for i, d in hits if max_distance is None or d <= max_distance]
            query = self._joined().where(f.c.id.in_([i for i, _ in near]))
            query = self._filtered(query, kind, since, until)
            with self.engine.connect() as conn:
                rows = {r.id: r for r in conn.execute(query)} if near else {}
            out = [dict(_face_dict(rows[i]), distance=round(d, 4)) for i, d in near if i in rows]
            # enough, or nothing nearer left to look at: the index had no more, or the farthest is too far
            if len(out) >= k or len(hits) < wanted or len(near) < len(hits):
                return out[:k]
            wanted *= 4

    def face(self, face_id):
        """One face (:func:`_face_dict`); 404 when unknown."""
        with self.engine.connect() as conn:
            row = conn.execute(self._joined().where(self.faces_table.c.id == int(face_id))).first()
        if row is None:
            raise UserError(NO_SUCH_FACE, 404)
        return _face_dict(row)

    def embedding(self, face_id):
        """The embedding kept for ``face_id``: ``(128,)`` float32; 404 when unknown."""
        with self.engine.connect() as conn:
            row = conn.execute(self.faces_table.select().where(self.faces_table.c.id == int(face_id))).first()
        if row is None:
            raise UserError(NO_SUCH_FACE, 404)
        return np.frombuffer(row.embedding, dtype="<f4").astype(np.float32)

    def chip_path(self, face_id):
        """The face crop of ``face_id`` (``media/<id>/chips/<face id>.jpg``, 150 px RGB JPEG), or ``None``."""
        face = self.face(face_id)
        path = self.media_root / face["media"] / "chips" / f"{face['face']}.jpg"
        return path if path.is_file() else None

    def unknown_faces(self, after_id=0, ids=None):
        """Faces kept as not known, oldest first, with ids above ``after_id`` (and among ``ids`` when given):
        ``[(face dict, embedding)]`` (what the unknown inbox reads incrementally)."""
        f = self.faces_table
        query = self._joined().where(f.c.known.is_(False), f.c.id > int(after_id)).order_by(f.c.id)
        if ids is not None:
            query = query.where(f.c.id.in_([int(i) for i in ids]))
        with self.engine.connect() as conn:
            return [(_face_dict(r), np.frombuffer(r.embedding, dtype="<f4").astype(np.float32))
                    for r in conn.execute(query)]

    def may_change(self, media_id, who):
        """True when ``who`` may delete media ``media_id`` or its faces: its keeper, or an admin."""
        return owners.may_read(self.folder(media_id), who)

    # -- deleting --------------------------------------------------------------------------------
    def delete_media(self, media_id):
        """Delete a media item: its rows, then its faces from the index, then its folder. Returns its name."""
        f = self.faces_table
        with db.disk_full_as_507(), self.engine.begin() as conn:
            row = self._media_row(conn, media_id)
            ids = [r.id for r in conn.execute(f.select().with_only_columns(f.c.id).where(f.c.media_id == media_id))]
            conn.execute(f.delete().where(f.c.media_id == media_id))
            conn.execute(self.media_table.delete().where(self.media_table.c.id == media_id))
        self.index.remove(ids)
        shutil.rmtree(self.media_root / media_id, ignore_errors=True)
        return row.name

    def delete_face(self, face_id):
        """Delete one face (its row, its index entry, its chip). Returns its media id."""
        face = self.face(face_id)
        with db.disk_full_as_507(), self.engine.begin() as conn:
            conn.execute(self.faces_table.delete().where(self.faces_table.c.id == face["face"]))
        self.index.remove([face["face"]])
        (self.media_root / face["media"] / "chips" / f"{face['face']}.jpg").unlink(missing_ok=True)
        return face["media"]

    def forget_kol(self, slug):
        """A KOL was deleted: no library face is named as ``slug`` any more (they become not known,
        still found by face). Returns the ids of the faces that changed, ascending."""
        f = self.faces_table
        with db.disk_full_as_507(), self.engine.begin() as conn:
            ids = sorted(conn.execute(f.select().with_only_columns(f.c.id).where(f.c.kol == slug)).scalars())
            conn.execute(f.update().where(f.c.id.in_(ids)).values(kol=None, identity=None, known=False))
        return ids

    def sweep(self, retention_days, now=None):
        """Delete media kept more than ``retention_days`` days ago (0: keep forever). Returns their ids, sorted."""
        if not retention_days:
            return []
        now = time.time() if now is None else now
        old = self.list_media(until=now - retention_days * 86400)
        for item in old:
            self.delete_media(item["media"])
        return sorted(item["media"] for item in old)
