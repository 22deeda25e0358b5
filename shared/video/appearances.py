"""Who appeared in a video, and when: the summary of its face tracks.

Known faces are grouped by KOL. Faces that read "unknown" are grouped into distinct
people by clustering their tracks' embeddings (:func:`cluster_unknowns`): two tracks
are the same stranger when *every* pair of their embeddings is closer than the
model's known/unknown distance threshold (complete linkage), so one stranger seen
in several scenes is one row ("unknown #1") and two strangers are two rows.
Without a model no face is embedded: every face is one "unknown" row.

Times are seconds from the start of the video; frame indices count from 0.
"""
import io

import numpy as np

from shared.core import csvsafe
from shared.video.tracks import merge_spans

#: Two unknown tracks are one stranger when all their embeddings are within this distance of each
#: other: a little under dlib's same-person distance (0.6,
#: :data:`shared.faces.engine.SAME_PERSON_DISTANCE`), so two look-alike strangers stay apart.
SAME_STRANGER_DISTANCE = 0.55


def cluster_unknowns(tracks, threshold=SAME_STRANGER_DISTANCE):
    """Group tracks into distinct people by their embeddings.

    tracks: :class:`shared.video.tracks.Track` objects with at least one embedding, in the
    order to number them (first appearance first). threshold: the largest distance
    between two embeddings of one person (the model's threshold).
    Returns a list of clusters (lists of tracks), numbered by their first track.
    """
    clusters = []  # [(tracks, (K, 128) embeddings)]
    for t in tracks:
        mine = np.asarray(t.embeddings, dtype=np.float64)
        best, best_d = None, None
        for k, (_members, E) in enumerate(clusters):
            d = float(np.max(np.linalg.norm(E[:, None, :] - mine[None, :, :], axis=2)))
            if d <= threshold and (best_d is None or d < best_d):
                best, best_d = k, d
        if best is None:
            clusters.append(([t], mine))
        else:
            members, E = clusters[best]
            clusters[best] = (members + [t], np.vstack([E, mine]))
    return [members for members, _ in clusters]


def _row(name, label, number, spans, fps, gap):
    """One summary row; ``name`` is the KOL's display name or ``None`` (the JSON's ``"identity"``)."""
    merged = merge_spans(spans)
    ranges = merge_spans(merged, gap=gap)
    return {"identity": name, "label": label, "unknown": number,
            "first_s": round(merged[0][0] / fps, 2), "last_s": round(merged[-1][1] / fps, 2),
            "frames": int(sum(b - a + 1 for a, b in merged)),
            "ranges": [[round(a / fps, 2), round((b + 1) / fps, 2)] for a, b in ranges]}


def summarize(tracks, fps, model=None, min_frames=3, gap_s=0.5):
    """The summary rows of a video.

    tracks: every :class:`shared.video.tracks.Track` so far; fps: the video's frame rate;
    model: the :class:`shared.recognition.model.Model` used (``None``: no face is named).
    Tracks drawn on fewer than ``min_frames`` frames are left out. A track counts for a KOL on the
    frames it showed that KOL (:meth:`shared.video.tracks.Track.spans_of`); a track that never
    showed one is a stranger.

    Returns ``[{"identity", "label", "unknown", "first_s", "last_s", "frames",
    "ranges"}]``: ``identity`` is the KOL's display name or ``None``; ``label`` is
    what a person reads ("Lin-Manuel Miranda", "unknown #2", or "unknown" without a
    model); ``unknown`` is the stranger's number or ``None``; ``frames`` counts frames
    where that person was drawn; ``ranges`` are ``[start_s, end_s]`` times on screen
    (gaps shorter than ``gap_s`` are bridged; ``end_s`` is the end of the last frame).
    KOLs first (most frames first), then strangers by number.
    """
    fps = float(fps) or 25.0
    gap = int(round(gap_s * fps))
    kept = sorted((t for t in tracks if t.frames_shown >= min_frames), key=lambda t: (t.spans[0][0], t.id))
    known, strangers, unembedded = {}, [], []
    for t in kept:
        named = {a for a, _, _ in t.answers if a is not None} if model is not None else set()
        for slug in sorted(named):  # the frames it showed each KOL on (a track loses a name it was wrong about)
            known.setdefault(model.names.get(slug, slug), []).extend(t.spans_of(slug))
        if named:
            continue  # its other frames read "?" while its name was being checked: not a stranger
        if model is not None and t.embeddings:
            strangers.append(t)
        else:
            unembedded.append(t)
    rows = [_row(name, name, None, spans, fps, gap) for name, spans in known.items()]
    rows.sort(key=lambda r: (-r["frames"], r["first_s"]))
    if model is not None:
        for n, members in enumerate(cluster_unknowns(strangers), start=1):
            rows.append(_row(None, f"unknown #{n}", n, [s for t in members for s in t.spans], fps, gap))
    if unembedded:
        n = len(rows) - len(known) + 1
        label = f"unknown #{n}" if model is not None else "unknown"
        rows.append(_row(None, label, n if model is not None else None,
                         [s for t in unembedded for s in t.spans], fps, gap))
    return rows


CSV_COLUMNS = ("who", "kol", "start_s", "end_s", "seconds")


def to_csv(rows):
    """CSV text of who appeared when: one line per time range of each row of :func:`summarize`.

    Columns: ``who`` (the label), ``kol`` (1 for a KOL, 0 for a stranger), ``start_s``,
    ``end_s``, ``seconds``; lines in time order. A name a spreadsheet would read as a formula
    (``=...``, ``+...``, ``-...``, ``@...``) starts with ``'`` (:func:`shared.core.csvsafe.cell`).
    """
    lines = []
    for r in rows:
        for a, b in r.get("ranges") or [[r["first_s"], r["last_s"]]]:
            lines.append((a, r.get("label") or r["identity"] or "unknown", 1 if r["identity"] else 0, a, b,
                          round(b - a, 2)))
    lines.sort(key=lambda x: (x[0], x[1]))
    buf = io.StringIO()
    w = csvsafe.writer(buf, lineterminator="\r\n")
    w.writerow(CSV_COLUMNS)
    for _, *line in lines:
        w.writerow([f"{v:.2f}" if isinstance(v, float) else v for v in line])
    return buf.getvalue()
