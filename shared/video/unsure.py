"""A video's unsure faces for the review queue: one item per track whose answer is below "sure" (:func:`queue_tracks`).

Photos and batches queue each face answered below :data:`shared.recognition.report.SURE`
(:mod:`shared.recognition.review`); a video queues each *track* (one face followed through one
shot) instead of each frame: when a run reaches its end, every track drawn on at least
``Settings.min_frames`` frames whose answer, as drawn when it ended, is below "sure" (a KOL under
:data:`SURE`, "?", or "unknown" under it) is queued with its best evidence: the face of the vote
whose ``p_same`` was highest (:attr:`shared.video.tracks.Track.best`, kept by the recognition
loop), its embedding and its candidate KOLs. The queue's id is the embedding's hash, so a
video watched again (the same frames, the same embeddings) queues nothing twice.

Crops are RGB ``uint8``; boxes ``(top, right, bottom, left)`` in the crop's pixels.
"""
import logging

import numpy as np

from shared.faces import engine
from shared.faces.boxes import side
from shared.recognition.report import SURE

log = logging.getLogger(__name__)

#: Margin kept around a face's box in a track's best crop, as a share of the box's side (enough to align it
#: again and to show it with :data:`shared.recognition.review.MARGIN` around it).
CROP_MARGIN = 0.6


def best_crop(rgb, box):
    """``(crop, box in the crop)``: the face ``box`` of frame ``rgb`` with :data:`CROP_MARGIN` around it (a copy)."""
    h, w = rgb.shape[:2]
    m = CROP_MARGIN * side(box)
    y0, x0 = max(0, int(box[0] - m)), max(0, int(box[3] - m))
    y1, x1 = min(h, int(box[2] + m) + 1), min(w, int(box[1] + m) + 1)
    inner = (int(box[0]) - y0, int(box[1]) - x0, int(box[2]) - y0, int(box[3]) - x0)
    return np.ascontiguousarray(rgb[y0:y1, x0:x1]), inner


def keep_best(tracks, index, rgb):
    """After the votes of frame ``index``: each of ``tracks`` that voted on it keeps its face as
    :attr:`shared.video.tracks.Track.best` when this vote's ``p_same`` is its highest so far."""
    for t in tracks:
        if t.voted != index or not t.p_same:
            continue
        p = t.p_same[-1][1]
        if t.best is None or p > t.best[0]:
            crop, inner = best_crop(rgb, t.box)
            t.best = (p, crop, inner, t.embedding)


def unsure_tracks(rec):
    """``[(track, face object)]`` of the tracks of recognizer ``rec`` to queue (module docstring); the face
    object is as the JSON contract has it (``identity``, ``confidence``, ``known``, ``number``: the track id)."""
    if rec.model is None:
        return []
    out = []
    for t in rec.trackset.every():
        if t.best is None or t.frames_shown < rec.settings.min_frames:
            continue
        view = rec.view(t, (1 << 30, 1 << 30))
        if view.unsure or view.confidence < SURE:
            out.append((t, {"identity": view.name, "confidence": view.confidence, "known": view.known,
                            "number": t.id}))
    return out


def queue_tracks(queue, rec, source):
    """Queue the unsure tracks of ``rec`` (:func:`unsure_tracks`) in ``queue`` (a
    :class:`shared.recognition.review.Queue`); source: ``{"kind": "video", "run": video id, "photo": file name}``.
    Returns the ids queued now. A failure is logged, never the stream's error."""
    added = []
    try:
        for t, obj in unsure_tracks(rec):
            _p, crop, inner, embedding = t.best
            face = engine.Face(box=inner, chip=engine.align(crop, [inner])[0], embedding=embedding)
            added += queue.collect(crop, [face], [obj], rec.model, source)
    except Exception:  # noqa: BLE001 - the video's answers stand without their review items
        log.exception("could not queue the unsure tracks of video %s for review", source.get("run"))
    return added
