"""The review queue: faces answered below "sure", what a person said about them, and the "not X" negatives.

Everything lives in ``DATA_DIR/review/`` (:data:`FOLDER`), written with the atomic helpers of
:mod:`shared.core.storage` under one cross-process lock (``.lock``):

- ``pending/<id>/`` a face waiting for an answer: ``item.json`` (the record below), ``face.png``
  (the face with a margin, as people see it) and ``chip.png`` + ``chip.npy`` (the aligned chip
  and its ``(128,)`` ``float64`` embedding, exactly as :func:`shared.training.pool.save_chip`
  stores a pool photo, so "this is X" can add it to the pool as it is);
- ``reviewed/<id>/`` the same folder once answered (moved there by one rename), so a face
  answered once is never queued again and a second answer is refused;
- ``negatives.npz`` the reviewed "not X" faces: ``E`` ``(n, 128)`` ``float32``, ``slugs`` ``(n,)``
  (the KOL each row is *not*) and ``items`` ``(n,)`` (the review id it came from).

An id is 16 hex digits of the SHA-1 of the face's embedding as ``float32`` bytes
(:func:`face_id`): the same face (the same embedding) is one item, however often it is predicted.

``item.json``: ``{"id", "created" (UTC ISO), "source": {"kind": "single"|"batch"|"video", "run", "photo",
"face" (its number in the photo; a video's track id)}, "shown": {"identity", "confidence", "known"} (the answer given),
"candidates": [{"slug", "name", "distance", "similarity"}] (the :data:`CANDIDATES` KOLs with the
nearest pool photos, nearest first), "model_version", "answer": null | {"kind": "is"|"not"|"nobody",
"kol", "by", "at", "added" (the pool chip id, or null), "negatives": [slugs]}}``.

The rule that uses the negatives is :func:`veto`, called by :meth:`shared.recognition.model.Model.predict`.
"""
import hashlib
import io
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from shared.core.errors import UserError
from shared.core.ids import HEX16_RE
from shared.core.storage import (atomic_write, atomic_write_bytes, atomic_write_json, file_identity, locked, read_arrays,
                                 read_json)
from shared.faces import engine, images
from shared.recognition.report import SURE  # answers below it go to the queue (what the pages call "sure")

#: The review folder's name under DATA_DIR.
FOLDER = "review"
#: Embedding distance under which a face counts as the reviewed face itself. Measured (2026-12-03): the same
#: photo scaled to 90 % and saved again as JPEG (quality 70) came back 0.05-0.19 away (8 asian_dev photos);
#: two different photos of one person are under 0.2 in well under 1 % of pairs (under 0.25: 0.56 % of lfw_dev's
#: 10,133 same-person pairs, 0.44 % of asian_dev's 2,029; medians 0.44 and 0.40).
SAME_FACE = 0.2
#: Candidate KOLs kept per face (by nearest pool photo).
CANDIDATES = 3
#: Most faces waiting at once; beyond it new unsure faces are not queued (the queue is for people).
MAX_PENDING = 2000
#: The three answers.
ANSWERS = ("is", "not", "nobody")
#: Margin around the face box in ``face.png``, as a share of the box's side; shown at least this many pixels.
MARGIN, MIN_SIDE = 0.35, 160

ALREADY = "This face was already reviewed ({answer}); it has left the queue and nothing was changed."
NO_SUCH = "There is no such face in the review queue."
GONE = "That KOL is no longer in the training pool (deleted meanwhile); nothing was changed."


def face_id(embedding):
    """The review id of a face: 16 hex digits of the SHA-1 of its embedding as ``float32`` bytes."""
    raw = np.asarray(embedding, dtype=np.float32).reshape(engine.EMBEDDING_SIZE).tobytes()
    return hashlib.sha1(raw).hexdigest()[:16]


def is_unsure(obj):
    """True for a face object (the JSON contract) shown with confidence below :data:`SURE`."""
    return float(obj["confidence"]) < SURE


def face_crop(rgb, box):
    """The face ``box`` ``(top, right, bottom, left)`` of ``rgb`` with :data:`MARGIN` around it, clipped to
    the image, scaled up so its longest side is at least :data:`MIN_SIDE` pixels (RGB ``uint8``)."""
    import cv2

    top, right, bottom, left = (int(v) for v in box)
    m = int(MARGIN * max(bottom - top, right - left))
    h, w = rgb.shape[:2]
    crop = rgb[max(0, top - m):min(h, bottom + m), max(0, left - m):min(w, right + m)]
    side = max(crop.shape[:2]) if crop.size else 0
    if 0 < side < MIN_SIDE:
        scale = MIN_SIDE / side
        crop = cv2.resize(crop, (round(crop.shape[1] * scale), round(crop.shape[0] * scale)),
                          interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(crop)


@dataclass
class Negatives:
    """The reviewed "not X" faces: ``E`` ``(n, 128)`` ``float32``, ``slugs`` and ``items`` ``(n,)`` str."""

    E: np.ndarray
    slugs: np.ndarray
    items: np.ndarray

    @classmethod
    def empty(cls):
        return cls(np.zeros((0, engine.EMBEDDING_SIZE), np.float32), np.zeros(0, str), np.zeros(0, str))

    def __len__(self):
        return len(self.E)


def veto(E, idx, P, S, dn, classes, negatives):
    """The reviewers' "not X" answers applied to the rule's candidates: ``(P, S)``, changed copies.

    E ``(M, 128)`` the faces; idx, P, S, dn ``(M, t)`` as :meth:`shared.recognition.model.Model.scores`
    gives them (candidate KOL indices into ``classes``, ``p_right``, ``p_stranger``, distance to the
    candidate's nearest pool photo); negatives: :class:`Negatives` or ``None`` (nothing changes).

    The rule, a nearest-neighbour vote between two labelled sets: candidate ``k`` of face ``i`` is
    dropped (``P[i, j] = 0``) when the face is nearer to one of the faces reviewed as "not k" than to
    k's nearest pool photo and the rule is not sure of k (``P < SURE``), or when it is within
    :data:`SAME_FACE` of a "not k" face (the reviewed face itself, whatever the rule now says of it).
    It has no constant fitted to anyone: it cannot drop a face that is nearer to one of k's own photos
    than to every "not k" face (a reviewed lookalike does not hide k's real photos), and it leaves the
    answers shown as sure alone. Measured with ``bench/bench_review.py`` (2026-12-03, faces not reviewed,
    3 draws): letting the negatives overturn sure answers too caught a few more strangers (lfw_dev 5042
    instead of 5029 of 5043, asian_dev 19 instead of 17 of 26) but unnamed KOL photos that were named
    right (2 of 1400 on lfw_dev, 4 of 439 on asian_dev), so the KOL share no longer rose; this rule
    raises or keeps both shares on both populations.
    A face whose first candidate is dropped keeps the stranger side's odds of the rest:
    ``S = max(S, min(1 - the largest P left, SURE))``, so an "unknown" shown for it is the more likely answer,
    but the veto alone never makes it a sure one: it is a reviewer's answer about a face like this one, not a
    calibrated probability. Uncapped (``S`` up to 1), the sure "unknown"s it made on asian_dev's held-out half
    were right 74 times in 78 (``bench/bench_review.py``, negatives only, 2026-12-03), below the 99 % that
    "sure" promises.
    """
    if negatives is None or not len(negatives) or not len(P):
        return P, S
    column = {s: i for i, s in enumerate(classes)}
    neg_k = np.array([column.get(str(s), -1) for s in negatives.slugs], dtype=np.int64)
    keep = neg_k >= 0
    if not keep.any():
        return P, S
    N, neg_k = np.asarray(negatives.E, dtype=np.float64)[keep], neg_k[keep]
    E = np.asarray(E, dtype=np.float64).reshape(len(P), -1)
    D = np.sqrt(np.maximum((E * E).sum(1)[:, None] + (N * N).sum(1)[None, :] - 2.0 * E @ N.T, 0.0))
    P, S = np.array(P, dtype=np.float64), np.array(S, dtype=np.float64)
    dropped = np.zeros(P.shape, dtype=bool)
    for j in range(P.shape[1]):
        nearest_not = np.where(neg_k[None, :] == np.asarray(idx)[:, j:j + 1], D, np.inf).min(1)
        dropped[:, j] = ((nearest_not < np.asarray(dn)[:, j]) & (P[:, j] < SURE)) | (nearest_not < SAME_FACE)
    P[dropped] = 0.0
    first = dropped[:, 0]
    if first.any():
        S[first] = np.maximum(S[first], np.minimum(1.0 - P[first].max(1), SURE)[:, None])
    return P, S


_negatives_cache = {}  # {negatives.npz path: (file identity, Negatives)} of this process
_negatives_lock = threading.Lock()


def _now():
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Queue:
    """The review folder ``root`` (normally ``DATA_DIR/review``): the queue, the answers, the negatives."""

    def __init__(self, root):
        self.root = Path(root)
        self.pending_dir, self.reviewed_dir = self.root / "pending", self.root / "reviewed"
        self.negatives_path, self.lock_path = self.root / "negatives.npz", self.root / ".lock"

    # -- reading ------------------------------------------------------------------------------
    def negatives(self):
        """The current :class:`Negatives`, read once per process and again whenever the file was
        rewritten (one ``stat`` per call, as :meth:`shared.recognition.store.ModelStore.cached`), so a new
        "not X" reaches every process on its next prediction."""
        key = str(self.negatives_path)
        identity = file_identity(self.negatives_path)
        with _negatives_lock:
            hit = _negatives_cache.get(key)
            if hit is not None and hit[0] == identity:
                return hit[1]
        found = self._read_negatives()
        with _negatives_lock:
            _negatives_cache[key] = (identity, found)
        return found

    def _read_negatives(self):
        try:
            arrays = read_arrays(self.negatives_path)
        except (OSError, ValueError):
            return Negatives.empty()
        return Negatives(arrays["E"].astype(np.float32).reshape(-1, engine.EMBEDDING_SIZE),
                         arrays["slugs"].astype(str), arrays["items"].astype(str))

    def count(self):
        """How many faces wait for an answer."""
        try:
            return sum(1 for e in os.scandir(self.pending_dir) if HEX16_RE.match(e.name))
        except FileNotFoundError:
            return 0

    def pending(self):
        """The waiting items (``item.json`` records), least sure first, then oldest."""
        items = []
        for folder in sorted(self.pending_dir.glob("*")) if self.pending_dir.is_dir() else []:
            item = read_json(folder / "item.json") if HEX16_RE.match(folder.name) else None
            if item:
                items.append(item)
        return sorted(items, key=lambda i: (i["shown"]["confidence"], i["created"], i["id"]))

    def find(self, rid):
        """``(item, folder)`` of the review id ``rid`` (waiting or answered); 404 for a malformed or unknown id."""
        rid = str(rid)
        if HEX16_RE.match(rid):
            for folder in (self.pending_dir / rid, self.reviewed_dir / rid):
                item = read_json(folder / "item.json")
                if item:
                    return item, folder
        raise UserError(NO_SUCH, 404)

    def embedding(self, rid):
        """The ``(128,)`` embedding of the face ``rid`` (404 for a malformed or unknown id)."""
        return read_arrays(self.find(rid)[1] / "chip.npy")

    # -- queueing -----------------------------------------------------------------------------
    def collect(self, rgb, found, objects, model, source, names=None):
        """Queue the faces of one photo shown below "sure" (:func:`is_unsure`) that have a candidate KOL.

        rgb: the photo as analysed; found: its :class:`shared.faces.engine.Face` list (boxes in ``rgb``'s
        pixels) in the order of ``objects`` (face objects); model: the
        :class:`shared.recognition.model.Model` that answered; source: ``{"kind", "run", "photo"}``;
        names: ``{slug: display name}`` (default the model's). Returns the ids queued now.
        """
        added = []
        for face, obj in zip(found, objects):
            if not is_unsure(obj):
                continue
            candidates = [{"slug": s, "name": (names or {}).get(s, model.names.get(s, s)), "distance": d,
                           "similarity": sim} for s, sim, d in model.similar(face.embedding, CANDIDATES)]
            if candidates and self.add(rgb, face, obj, candidates, dict(source, face=obj.get("number")),
                                       model.version):
                added.append(face_id(face.embedding))
        return added

    def add(self, rgb, face, obj, candidates, source, model_version=""):
        """Queue one face; ``False`` when the same face is queued or answered already, or the queue is full."""
        rid = face_id(face.embedding)
        if (self.pending_dir / rid).exists() or (self.reviewed_dir / rid).exists():
            return False
        self.pending_dir.mkdir(parents=True, exist_ok=True)
        work = self.root / f".tmp-{uuid.uuid4().hex[:8]}"
        work.mkdir()
        try:
            item = {"id": rid, "created": _now(), "source": source,
                    "shown": {k: obj[k] for k in ("identity", "confidence", "known")},
                    "candidates": candidates, "model_version": model_version, "answer": None}
            atomic_write_bytes(work / "face.png", images.encode_png(face_crop(rgb, face.box)))
            atomic_write_bytes(work / "chip.png", images.encode_png(face.chip))
            buf = io.BytesIO()
            np.save(buf, np.asarray(face.embedding, dtype=np.float64).reshape(engine.EMBEDDING_SIZE))
            atomic_write_bytes(work / "chip.npy", buf.getvalue())
            atomic_write_json(work / "item.json", item)
            with locked(self.lock_path):
                if (self.pending_dir / rid).exists() or (self.reviewed_dir / rid).exists() \
                        or self.count() >= MAX_PENDING:
                    return False
                os.rename(work, self.pending_dir / rid)
            return True
        finally:
            shutil.rmtree(work, ignore_errors=True)

    # -- answering ----------------------------------------------------------------------------
    def answer(self, rid, kind, kol, by, kols, add=None):
        """Record a reviewer's answer to the waiting face ``rid``; the face leaves the queue.

        kind: one of :data:`ANSWERS` ("is" / "not": the KOL ``kol``, a pool slug; "nobody": no KOL, the
        face becomes a "not" for each of its candidates still in the pool); by: who answered;
        kols: the pool's ``{slug: info}``, or a function giving it (read under the lock); add: for "is", ``add(chip, embedding) -> chip id`` puts the
        face (its aligned chip, RGB ``uint8``, and ``(128,)`` embedding) into the KOL's pool photos (called
        under the lock, before anything here changes).
        Returns the answered item. :class:`UserError`: 400 a bad answer, 404 a forged id or a KOL
        not (or no longer) in the pool, 409 a face answered already; in each case nothing changes.
        """
        if kind not in ANSWERS:
            raise UserError("Answer with 'is' (this is the KOL), 'not' (this is not the KOL) or "
                            "'nobody' (nobody we know).", 400)
        if kind != "nobody" and not kol:
            raise UserError(f"Say which KOL the answer '{kind}' is about (field 'kol').", 400)
        if add is not None and kind != "is":
            raise UserError("Only a face answered 'is' can be added to a KOL's photos.", 400)
        with locked(self.lock_path):
            item, folder = self.find(rid)
            kols = kols() if callable(kols) else kols
            if item.get("answer"):
                raise UserError(ALREADY.format(answer=describe(item["answer"])), 409)
            if kind != "nobody" and kol not in kols:
                raise UserError(GONE, 404)
            negatives = ([kol] if kind == "not" else
                         [c["slug"] for c in item["candidates"] if c["slug"] in kols] if kind == "nobody" else [])
            embedding = read_arrays(folder / "chip.npy")
            added = add(images.load_image(folder / "chip.png", max_side=None), embedding) if add is not None else None
            item["answer"] = {"kind": kind, "kol": kol if kind != "nobody" else None, "by": by, "at": _now(),
                              "added": added, "negatives": negatives}
            if negatives:
                current = self._read_negatives()
                self._write_negatives(np.vstack([current.E, np.tile(embedding.astype(np.float32), (len(negatives), 1))]),
                                      np.concatenate([current.slugs, negatives]),
                                      np.concatenate([current.items, [rid] * len(negatives)]))
            atomic_write_json(folder / "item.json", item)
            self.reviewed_dir.mkdir(parents=True, exist_ok=True)
            os.rename(folder, self.reviewed_dir / rid)
        return item

    def to_add(self):
        """The faces answered "this is X" without being added to X's photos (a member's answer), newest first."""
        items = [read_json(f / "item.json") or {} for f in self._folders(self.reviewed_dir)]
        items = [i for i in items if (i.get("answer") or {}).get("kind") == "is" and not i["answer"].get("added")]
        return sorted(items, key=lambda i: (i["answer"]["at"], i["id"]), reverse=True)

    def add_answered(self, rid, kols, add):
        """Add the face ``rid``, answered "this is X" already, to X's photos: ``add(chip, embedding) -> chip id``
        as for :meth:`answer`. Returns the item. 404 a forged id or X no longer in the pool, 409 a face not
        answered "this is" (or waiting) or added already; nothing changes then."""
        with locked(self.lock_path):
            item, folder = self.find(rid)
            answer = item.get("answer") or {}
            if answer.get("kind") != "is":
                raise UserError("Only a face answered 'this is' a KOL can be added to their photos; nothing was "
                                "changed.", 409)
            if answer.get("added"):
                raise UserError("This face was added to the KOL's photos already; nothing was changed.", 409)
            kols = kols() if callable(kols) else kols
            if answer["kol"] not in kols:
                raise UserError(GONE, 404)
            answer["added"] = add(images.load_image(folder / "chip.png", max_side=None), read_arrays(folder / "chip.npy"))
            atomic_write_json(folder / "item.json", item)
        return item

    def _write_negatives(self, E, slugs, items):
        """Replace ``negatives.npz`` atomically (call under the lock)."""
        def write(fh):
            np.savez(fh, E=np.asarray(E, np.float32).reshape(-1, engine.EMBEDDING_SIZE),
                     slugs=np.asarray(slugs, dtype=str).reshape(-1), items=np.asarray(items, dtype=str).reshape(-1))
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write(self.negatives_path, write, suffix=".npz")

    # -- forgetting -----------------------------------------------------------------------------
    def forget_kol(self, slug):
        """A KOL deleted for good: its "not" faces go, the faces answered "this is" it are deleted (they
        are that person), and it leaves the candidates of the waiting faces. Returns the ids deleted."""
        slug = str(slug)
        with locked(self.lock_path):
            current = self._read_negatives()
            keep = current.slugs != slug
            if not keep.all():
                self._write_negatives(current.E[keep], current.slugs[keep], current.items[keep])
            deleted = []
            for folder in self._folders(self.reviewed_dir):
                item = read_json(folder / "item.json") or {}
                answer = item.get("answer") or {}
                if answer.get("kind") == "is" and answer.get("kol") == slug:
                    shutil.rmtree(folder, ignore_errors=True)
                    deleted.append(folder.name)
                elif slug in (answer.get("negatives") or []):
                    answer["negatives"] = [s for s in answer["negatives"] if s != slug]
                    atomic_write_json(folder / "item.json", item)
            for folder in self._folders(self.pending_dir):
                item = read_json(folder / "item.json") or {}
                if any(c["slug"] == slug for c in item.get("candidates", [])):
                    item["candidates"] = [c for c in item["candidates"] if c["slug"] != slug]
                    atomic_write_json(folder / "item.json", item)
        return sorted(deleted)

    def forget_photo(self, slug, cid):
        """A pool photo removed: the reviewed face it was added from (if any) is deleted with it (only
        "this is X" answers add photos, and they leave no "not" rows). Returns the ids deleted."""
        deleted = []
        with locked(self.lock_path):
            for folder in self._folders(self.reviewed_dir):
                answer = (read_json(folder / "item.json") or {}).get("answer") or {}
                if answer.get("kol") == str(slug) and answer.get("added") == str(cid):
                    shutil.rmtree(folder, ignore_errors=True)
                    deleted.append(folder.name)
        return sorted(deleted)

    @staticmethod
    def _folders(parent):
        return sorted(p for p in parent.glob("*") if HEX16_RE.match(p.name)) if parent.is_dir() else []


def describe(answer, names=None):
    """An answer in words: ``"this is <name>"``, ``"this is not <name>"``, ``"nobody we know"``
    (``names``: ``{slug: display name}``; the slug where it has none)."""
    who = (names or {}).get(answer.get("kol"), answer.get("kol"))
    return {"is": f"this is {who}", "not": f"this is not {who}"}.get(answer.get("kind"), "nobody we know")


def beside(root):
    """The review folder next to a data folder's ``pool/`` or ``models/`` folder ``root`` (both live in DATA_DIR)."""
    return Path(root).parent / FOLDER
