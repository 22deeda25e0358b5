"""The per-frame recognition loop of a video: find faces, follow them, name them.

Recognising every face in every frame is slow (HOG detection plus a ResNet pass per
face) and makes names flicker. So, per frame:

- a **full pass** (every face in the frame) runs on the first frame, on every scene
  cut, and on a schedule: as often as :attr:`Settings.full_pixels_per_s` allows
  (every 0.5-3 s: about 1 s at 720p, 2.3 s at 1080p), less often while the scene
  stays the same: after a scheduled pass that found no new face, the next one comes
  :attr:`Settings.full_backoff` times later (at most 3 s), until a track starts or
  ends (:meth:`Recognizer.full_gap`). It sees the frame scaled so
  the smallest face worth finding (:attr:`Settings.min_face_px`, in frame pixels)
  reaches the size dlib's HOG detector finds (about 80 px), bounded by
  :attr:`Settings.max_full_pixels`; the scaled frame is cut into
  :attr:`Settings.tiles` overlapping strips, one executor call each (one per core),
  plus one cheap coarse call on the whole frame for faces too big for a strip's overlap.
  The calls also embed the faces they find, each face once (by the strip its centre
  lies in, or by the coarse call if it is wider than the overlap), so every face gets
  a vote, except on a scheduled pass the faces of *settled* tracks whose last
  :attr:`Settings.settle_votes` votes agree, the latest less than
  :attr:`Settings.reuse_s` old: found near where such a track was when the pass was
  sent, a face only confirms the track, which keeps its embedding and name;
- in between, a **discovery pass** looks at the whole frame scaled for faces of
  :attr:`Settings.discover_face_px` and more (cheap: no embeddings, within
  :attr:`Settings.discover_pixels_per_s`; about every 0.65 s at 720p, 1.5 s at 1080p):
  it confirms the tracks it sees and starts tracks for faces that came into view
  (they are drawn once the next region pass has recognised them);
- every :attr:`Settings.detect_every` frames, a **region pass** looks
  only around the faces already followed whose track is not stable (not *settled*,
  optical flow lost, or not confirmed by a detection for twice that many frames): a
  crop per face, scaled so the face is about :attr:`Settings.region_face_px`. It keeps
  boxes on the faces at a small cost; the faces of tracks not settled are embedded
  there too. A track is *settled* (:meth:`Recognizer.settled`) once more votes could
  not change its name: :attr:`Settings.settle_votes` votes, or two that agree, each
  at least :attr:`Settings.sure_vote` sure; and a vote since it last crossed
  another track;
- **crossings**: when one face passes in front of another, the hidden face's box can
  be carried onto the face in front. Tracks whose boxes overlap are marked crossed
  and embedded again at the next region pass; a fresh embedding farther than
  :attr:`Settings.same_face` from the mean of its track's earlier ones is someone
  else: that track ends, and the face gets a track of its own unless one already
  follows it (:meth:`Recognizer._reidentify`);
- **tracking** in between with pyramidal Lucas-Kanade optical flow on a small grey
  copy (the median motion of feature points inside each box moves and scales it);
- **scene cuts** are found on a 32x18 colour thumbnail (mean absolute difference
  between frames) and end every track at once;
- **naming**: all the faces of one frame that have an embedding (fresh, or the last
  one of a track) go to ``model.predict`` in ONE call, so the model may assign
  identities jointly; a fresh embedding's prediction is one vote for its track
  (:mod:`shared.video.tracks`).

Detection and embedding run through an executor (``shared.faces.parallel.pool()`` in the
server). Frames are decoded by a thread, a few frames ahead; a full pass is sent
when its frame is decoded and a region pass a few frames before its frame is drawn,
and results are applied at fixed frames, so the output does not depend on timing:
the inline executor (``executor=None``) gives exactly the same frames.

Conventions: frames are RGB ``uint8`` ``(H, W, 3)``; boxes are ``(top, right,
bottom, left)`` in the frame's pixels; frame indices count from 0; times are seconds.
"""
import collections
import queue
import threading
from dataclasses import dataclass

import cv2
import numpy as np

from shared.faces import engine, frames
from shared.faces.boxes import clip_box, iou, iou_matrix, match, region, side
from shared.faces.offload import Call
from shared.video import appearances
from shared.video.tracks import FaceView, Track

#: The smallest face (side of the box dlib draws with one upsampling, pixels) that dlib's HOG
#: detector finds without upsampling: faces of 40 px scaled to 60 are found in 34 of 36 lfw_dev
#: photos, scaled to 52 in 7 of 36.
HOG_MIN_PX = 60


@dataclass
class Settings:
    """Tuning of the recognition loop (defaults measured on bench/bench_video.py's clips)."""

    full_pixels_per_s: float = 2_000_000  # scheduled full passes look at about this many pixels a second
    full_every_s: tuple = (0.5, 3.0)  # ... but come at least and at most this many seconds apart
    full_backoff: float = 2.0  # ... this many times further apart while nothing changes (see Recognizer.full_gap)
    detect_every: int = 5  # frames between two region passes
    min_face_px: int = 40  # smallest face (box side, frame pixels) a full pass looks for
    max_full_pixels: int = 4_700_000  # most pixels a full pass may look at (bounds 4K and big upscales)
    tiles: int = 2  # strips a full pass is cut into (one executor call each)
    region_face_px: int = 90  # a region pass scales each face to about this size
    discover_face_px: int = 80  # a discovery pass (coarse, between full passes) finds faces from this size
    discover_pixels_per_s: float = 800_000  # ... and looks at about this many pixels a second
    region_margin: float = 0.5  # a region pass looks this far (x the face size) around a face
    plan_ahead: int = 3  # a region pass is sent this many frames before its frame is drawn
    flow_side: int = 480  # longest side of the grey copy used for optical flow
    settle_votes: int = 3  # votes before a track counts as settled ...
    sure_vote: float = 0.9  # ... or two agreeing votes, each at least this sure (see Recognizer.settled)
    cross_iou: float = 0.2  # tracks whose boxes overlap this much have crossed: each needs a fresh vote after
    same_face: float = engine.SAME_PERSON_DISTANCE  # a fresh embedding this far from its track's mean: another face
    reuse_s: float = 2.0  # a scheduled full pass does not re-embed a settled track voted on this recently (s)
    max_misses: int = 2  # passes in a row a track may miss before it is dropped
    iou_match: float = 0.3  # least overlap for a detection to continue a track
    cut_diff: float = 30.0  # mean absolute colour difference (0-255) of 32x18 thumbnails that counts as a cut
    lookahead: int = 16  # decoded frames kept ahead of drawing (hides the latency of a full pass)
    min_frames: int = 3  # tracks shown on fewer frames are left out of the summary


# -- work sent to the executor (top-level so a process pool can run it) -------------

def find_faces(rgb, upsample=0, embed=True, known=(), span=None):
    """Boxes of the faces in ``rgb`` (largest first) and, if ``embed``, their embeddings.

    known: boxes (``rgb``'s pixels) of faces already recognised: a face found near one
    of them (:func:`near_known`) is not embedded. span: ``(x_lo, x_hi, min_side)`` in
    ``rgb``'s pixels, or ``None``: only faces whose centre column lies in
    ``[x_lo, x_hi)`` and whose side is at least ``min_side`` are embedded (the others
    are embedded by another call of the same full pass). Returns ``(boxes, vectors)``:
    ``vectors`` is a list of ``(128,)`` arrays, ``None`` for a face not embedded
    (empty when not ``embed``).
    """
    boxes = engine.detect(rgb, upsample=upsample)
    if not embed or not boxes:
        return boxes, []
    lo, hi, least = span if span is not None else (-np.inf, np.inf, 0)
    todo = [k for k, b in enumerate(boxes)
            if lo <= (b[1] + b[3]) / 2 < hi and side(b) >= least and not near_known(b, known)]
    vectors = [None] * len(boxes)
    for k, v in zip(todo, engine.embed(engine.align(rgb, [boxes[k] for k in todo]))):
        vectors[k] = v
    return boxes, vectors


def near_known(box, known):
    """True when ``box`` is probably one of the ``known`` boxes, seen a little earlier.

    Its centre lies within one known box grown by half its side on every side (a face
    moving up to about one face width per second, seen up to ~0.7 s later) and its side
    is 0.6-1.6x that box's side.
    """
    cy, cx, s = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, side(box)
    for k in known:
        ks = side(k)
        if (k[0] - ks / 2 <= cy <= k[2] + ks / 2 and k[3] - ks / 2 <= cx <= k[1] + ks / 2
                and 0.6 * ks <= s <= 1.6 * ks):
            return True
    return False


def find_in_regions(crops, embed_flags):
    """:func:`find_faces` on each crop (``embed_flags[i]`` says whether to embed crop ``i``'s faces)."""
    return [find_faces(c, 0, bool(e)) for c, e in zip(crops, embed_flags)]


def warm_job():
    """Load dlib in a worker and run each network once (start-up of a server's pool)."""
    tile = np.zeros((120, 120, 3), np.uint8)
    find_faces(tile)
    engine.embed([np.zeros((engine.CHIP_SIZE, engine.CHIP_SIZE, 3), np.uint8)])
    return True


def _resize(rgb, s):
    if abs(s - 1.0) < 1e-3:
        return np.ascontiguousarray(rgb)
    return cv2.resize(rgb, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)


def _nms(found, threshold=0.3):
    """Drop detections overlapping an earlier (bigger) one: ``found`` is ``[(box, vector or None)]``.

    A kept detection without a vector takes the vector of the first one it drops that has one
    (the same face, embedded by another call). Returns the kept ``[(box, vector or None)]``, biggest first.
    """
    found = sorted(found, key=lambda f: -(f[0][2] - f[0][0]) * (f[0][1] - f[0][3]))
    kept = []
    for box, vec in found:
        over = next((i for i, k in enumerate(kept) if iou(box, k[0]) >= threshold or _inside(box, k[0])), None)
        if over is None:
            kept.append((box, vec))
        elif kept[over][1] is None and vec is not None:
            kept[over] = (kept[over][0], vec)
    return kept


def _inside(a, b):
    """True when the centre of ``a`` lies inside ``b``."""
    cy, cx = (a[0] + a[2]) / 2, (a[1] + a[3]) / 2
    return b[0] <= cy <= b[2] and b[3] <= cx <= b[1]


def full_scale(shape, settings):
    """The factor a frame of ``shape`` is resized by for a full pass (see the module docstring)."""
    h, w = shape[:2]
    return min(HOG_MIN_PX / float(settings.min_face_px), (settings.max_full_pixels / float(h * w)) ** 0.5)


def _scaled(boxes, s, x0):
    """Frame-pixel ``boxes`` in the pixels of a strip starting at column ``x0``, resized by ``s``."""
    return [tuple(float(v) * s for v in (b[0], b[1] - x0, b[2], b[3] - x0)) for b in boxes]


class FullPass:
    """The calls of one full pass over a frame; :meth:`result` gives ``[(box, embedding or None)]`` in frame pixels.

    embed: embed the faces found; known: frame-pixel boxes of faces not to embed again
    (see :func:`near_known`).
    """

    def __init__(self, executor, rgb, settings, scale=None, tiles=None, embed=True, known=()):
        h, w = rgb.shape[:2]
        s = full_scale(rgb.shape, settings) if scale is None else scale
        self.calls = []  # (call, scale, x offset in frame pixels)
        tiles = max(1, int(settings.tiles if tiles is None else tiles))
        overlap = int(max(2.5 * settings.min_face_px, 0.15 * w))  # frame pixels shared by neighbouring strips
        bounds = np.linspace(0, w, tiles + 1).astype(int)
        for k in range(tiles):
            x0, x1 = max(0, bounds[k] - overlap // 2), min(w, bounds[k + 1] + overlap // 2)
            small = _resize(rgb[:, x0:x1], s)
            # a strip embeds the faces centred in its own part: a face in the overlap is found by both strips
            own = (-np.inf if k == 0 else (bounds[k] - x0) * s,
                   np.inf if k == tiles - 1 else (bounds[k + 1] - x0) * s, 0) if tiles > 1 else None
            self.calls.append((Call(executor, find_faces, small, 0, embed, _scaled(known, s, x0), own), s, x0))
        if tiles > 1:  # faces wider than the overlap: a coarse look at the whole frame
            coarse = min(s, HOG_MIN_PX * 1.2 / overlap)  # finds faces bigger than the overlap
            wide = (-np.inf, np.inf, overlap * coarse)  # ... and embeds only those: a strip embeds the others
            self.calls.append((Call(executor, find_faces, _resize(rgb, coarse), 0, embed, _scaled(known, coarse, 0),
                                    wide), coarse, 0))
        self.shape = rgb.shape

    def result(self):
        found = []
        for call, s, x0 in self.calls:
            boxes, vectors = call.result()
            for k, b in enumerate(boxes):
                v = vectors[k] if k < len(vectors) else None  # None: not embedded
                box = (b[0] / s, b[1] / s + x0, b[2] / s, b[3] / s + x0)
                found.append((clip_box(box, self.shape), v))
        return _nms(found)

    def cancel(self):
        for call, _, _ in self.calls:
            call.cancel()


class RegionPass:
    """One call looking around given boxes of a frame; :meth:`result` gives, per box, ``[(box, embedding or None)]``."""

    def __init__(self, executor, rgb, boxes, embed_flags, settings):
        self.windows = []
        crops = []
        for box in boxes:
            y0, y1, x0, x1 = region(box, rgb.shape, settings.region_margin)
            s = float(np.clip(settings.region_face_px / max(1.0, side(box)), 0.25, 3.0))
            crops.append(_resize(rgb[y0:y1, x0:x1], s))
            self.windows.append((s, x0, y0))
        self.embed_flags = list(embed_flags)
        self.call = Call(executor, find_in_regions, crops, self.embed_flags)
        self.shape = rgb.shape

    def result(self):
        out = []
        for (boxes, vectors), (s, x0, y0), e in zip(self.call.result(), self.windows, self.embed_flags):
            found = []
            for k, b in enumerate(boxes):
                box = clip_box((b[0] / s + y0, b[1] / s + x0, b[2] / s + y0, b[3] / s + x0), self.shape)
                found.append((box, vectors[k] if e else None))
            out.append(found)
        return out

    def cancel(self):
        self.call.cancel()


@dataclass
class Prepared:
    """What :meth:`Recognizer.schedule` knows of a decoded frame before it is drawn."""

    grey: np.ndarray
    cut: bool
    full: object  # a FullPass or None
    discover: object = None  # a discovery FullPass (coarse, no embeddings) or None
    scheduled: bool = False  # the full pass is a scheduled one (not the first frame's, not a cut's)


class Recognizer:
    """The per-frame state of one video: tracks, pending passes, the summary so far.

    model: a :class:`shared.recognition.model.Model` or ``None`` (faces are then boxed and
    labelled "no model"). fps: the video's frame rate (for times in the summary).
    executor: something with ``submit(fn, *args)`` (a process pool) or ``None`` to
    run the work inline.
    """

    def __init__(self, model, fps, settings=None, executor=None):
        self.model = model
        self.fps = float(fps) if fps else 25.0
        self.settings = settings or Settings()
        self.executor = executor
        self.tracks = []
        self.finished = []  # dropped tracks (kept for the summary)
        self.regions = {}  # frame index -> (RegionPass, [tracks])
        self.next_id = 1
        self.prev_grey = None
        self.prev_thumb = None
        self.last_full = None
        self.last_cut = None  # the latest scene cut scheduled (frame index)
        self.processed = 0
        self.full_passes = 0
        self.region_passes = 0
        self.embeddings = 0
        self._flow_scale = None
        self.full_every = None  # frames between two scheduled full passes (set at the first frame)
        self.changes = 0  # tracks started or ended so far
        self.quiet = False  # the last scheduled full pass found no new face, and no track started or ended since
        self.discover_every = None  # frames between two discovery passes (set at the first frame)
        self.discover_scale = None
        self.last_discover = None
        self.discover_passes = 0

    # -- as frames are decoded, ahead of drawing ------------------------------------
    def schedule(self, index, rgb):
        """Prepare a decoded frame: its grey copy, whether it starts a new scene, its full pass if due.

        Call in frame order. Returns a :class:`Prepared` for :meth:`step`.
        """
        s = self.settings
        if self._flow_scale is None:
            self._flow_scale = min(1.0, float(s.flow_side) / max(rgb.shape[:2]))
        fs = self._flow_scale
        small = rgb if fs == 1.0 else cv2.resize(rgb, None, fx=fs, fy=fs, interpolation=cv2.INTER_LINEAR)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY)
        thumb = cv2.resize(small, (32, 18), interpolation=cv2.INTER_AREA).astype(np.int16)
        cut = self.prev_thumb is not None and float(np.abs(thumb - self.prev_thumb).mean()) > s.cut_diff
        self.prev_thumb = thumb
        full = None
        if self.full_every is None:
            pixels = rgb.shape[0] * rgb.shape[1] * full_scale(rgb.shape, s) ** 2
            every_s = float(np.clip(pixels / s.full_pixels_per_s, *s.full_every_s))
            self.full_every = max(1, int(round(every_s * self.fps)))
        if cut:
            self.last_cut = index
        scheduled = self.last_full is not None and not cut and index - self.last_full >= self.full_gap()
        if self.last_full is None or cut or scheduled:
            self.last_full = index
            full = FullPass(self.executor, rgb, s, known=self._reusable(index))
            self.full_passes += 1
        discover = None
        if self.discover_every is None:
            ds = min(1.0, HOG_MIN_PX / float(s.discover_face_px))
            pixels = rgb.shape[0] * rgb.shape[1] * ds * ds
            self.discover_scale = ds if ds < 0.8 * full_scale(rgb.shape, s) else None
            every_s = pixels / s.discover_pixels_per_s
            self.discover_every = max(s.detect_every, int(round(every_s * self.fps)))
            self.last_discover = index
        if full is not None:
            self.last_discover = index
        elif self.discover_scale and index - self.last_discover >= self.discover_every:
            self.last_discover = index
            discover = FullPass(self.executor, rgb, s, scale=self.discover_scale, tiles=1, embed=False)
            self.discover_passes += 1
        return Prepared(grey, cut, full, discover, scheduled)

    def full_gap(self):
        """Frames from one full pass to the next scheduled one: :attr:`full_every`, or
        :attr:`Settings.full_backoff` times that (at most :attr:`Settings.full_every_s`'s upper
        bound) while the scene is :attr:`quiet`: its last scheduled pass found no face the tracks
        did not already follow, and no track started or ended since. A small face coming into a
        quiet scene is found up to that much later (faces from :attr:`Settings.discover_face_px`
        up are found by the discovery passes in between).

        :meth:`schedule` decides from what :meth:`step` has applied (:attr:`Settings.lookahead`
        frames behind), so the schedule does not depend on timing.
        """
        if not self.quiet:
            return self.full_every
        longest = max(self.full_every, int(round(self.settings.full_every_s[1] * self.fps)))
        return int(min(longest, self.full_every * self.settings.full_backoff))

    def plan(self, index, upcoming):
        """After drawing frame ``index``: send the region pass of a frame a few frames ahead, if one is due.

        upcoming: ``[(index, rgb, Prepared)]`` of the decoded frames after ``index``, in order.
        """
        s = self.settings
        if not self.tracks or self.last_full is None:
            return
        target = index + s.plan_ahead
        for j, rgb, prep in upcoming:
            if prep.full is not None and j <= target:
                return  # a full pass comes first
            if j == target:
                break
        else:
            return  # the video ends before
        if (target - self._anchor) % s.detect_every or target in self.regions:
            return
        alive = [t for t in self.tracks if t.misses <= s.max_misses and not self._stable(t, target)]
        if not alive:
            return
        flags = [not self.settled(t) for t in alive]
        self.regions[target] = (RegionPass(self.executor, rgb, [t.box for t in alive], flags, s), alive)
        self.region_passes += 1

    def _reusable(self, index):
        """Boxes of the tracks whose embedding a full pass of frame ``index`` (not yet drawn) may reuse.

        A track qualifies while its last :attr:`Settings.settle_votes` votes all name what
        it shows and the latest is at most :attr:`Settings.reuse_s` before ``index``; none
        does when a scene cut comes before ``index`` (every track ends there). The boxes
        are where the tracks were on the last frame drawn.
        """
        s = self.settings
        if self.model is None or (self.last_cut is not None and self.last_cut >= self.processed):
            return []
        recent = index - s.reuse_s * self.fps
        return [tuple(t.box) for t in self.tracks
                if t.misses == 0 and self.settled(t) and t.voted is not None and t.voted >= recent
                and all(v[0] == t.identity for v in t.votes[-s.settle_votes:])]

    def settled(self, t):
        """More votes would not change what track ``t`` shows: it has :attr:`Settings.settle_votes`
        votes, or its last two name what it shows, each at least :attr:`Settings.sure_vote` sure
        (a third vote cannot outvote two agreeing ones, see :func:`shared.video.tracks.decide`); and
        it has voted since it last crossed another track (:meth:`_crossings`). Without a model
        nothing is voted on: every track is settled.
        """
        s = self.settings
        if self.model is None:
            return True
        if t.crossed is not None and (t.voted is None or t.voted <= t.crossed):
            return False  # crossed another face since its last vote: it may be following the other face now
        if len(t.votes) >= s.settle_votes:
            return True
        last = t.votes[-2:]
        return len(last) == 2 and all(v[0] == t.identity and v[1] >= s.sure_vote for v in last)

    def _stable(self, t, index):
        """A track needs no region pass at frame ``index``: settled, followed by optical flow, confirmed lately."""
        s = self.settings
        return self.settled(t) and t.points is not None and index - t.confirmed < 2 * s.detect_every

    # -- one frame --------------------------------------------------------------------
    def step(self, index, rgb, prepared):
        """Advance to frame ``index`` (prepared by :meth:`schedule`); returns the :class:`FaceView` list to draw."""
        changes = self.changes
        if prepared.cut:
            self._drop(list(self.tracks))
        elif self.prev_grey is not None and self.tracks:
            self._flow(prepared.grey)
        fresh = []
        if prepared.full is not None:
            self._anchor = index
            for j in [j for j in self.regions if j <= index]:
                self.regions.pop(j)[0].cancel()
            fresh = self._apply_full(index, prepared.full.result(), prepared.grey)
        elif index in self.regions:
            rp, tracks = self.regions.pop(index)
            fresh = self._apply_regions(index, rp.result(), tracks, prepared.grey)
        if prepared.discover is not None and not prepared.cut:
            self._apply_discovery(index, prepared.discover.result(), prepared.grey)
        if fresh:
            self._name(self._reidentify(fresh, index, prepared.grey), index)
        self._crossings(index)
        if prepared.full is not None:  # a scheduled pass that started and ended nothing: the scene is quiet
            self.quiet = prepared.scheduled and self.changes == changes
        elif self.changes != changes:
            self.quiet = False
        self.prev_grey = prepared.grey
        self.processed = index + 1
        views = []
        for t in self.tracks:
            if t.misses > 1 or (self.model is not None and not t.votes):
                continue  # lost for now, or found by a discovery pass and not recognised yet
            t.shown(index)
            views.append(self._view(t, rgb.shape))
        return views

    _anchor = 0

    def _view(self, t, shape):
        known = self.model is not None and t.identity is not None
        name = self.model.names.get(t.identity, t.identity) if known else None
        return FaceView(clip_box(t.box, shape), t.id, t.identity if known else None, name,
                        round(t.confidence, 2), known)

    def _apply_full(self, index, found, grey):
        """Match a full pass to the tracks; returns ``[(track, embedding)]`` to vote with."""
        alive = list(self.tracks)
        pairs, lost, new = match([t.box for t in alive], [f[0] for f in found], self.settings.iou_match)
        fresh = []
        for i, j in pairs:
            fresh.append((self._confirm(alive[i], found[j][0], index, grey), found[j][1]))
        for i in lost:
            alive[i].misses += 1
        self._drop([t for t in alive if t.misses > self.settings.max_misses])
        for j in new:
            fresh.append((self._start(found[j][0], index, grey), found[j][1]))
        return [(t, v) for t, v in fresh if v is not None]  # faces not embedded (known) keep their votes

    def _confirm(self, t, box, index, grey):
        """A detection pass saw track ``t`` at ``box``: move it there and follow new points. Returns ``t``."""
        t.box = np.asarray(box, dtype=np.float64)
        t.misses, t.confirmed = 0, index
        self._seed_points(t, grey)
        return t

    def _start(self, box, index, grey):
        """A new track for a face first seen at ``box`` in frame ``index``. Returns it."""
        t = Track(self.next_id, box, index)
        t.confirmed = index
        self.next_id += 1
        self.changes += 1
        self.tracks.append(t)
        self._seed_points(t, grey)
        return t

    def _apply_discovery(self, index, found, grey):
        """A coarse pass: confirm the tracks it sees, start tracks for new faces (recognised by the next region pass).

        Tracks it does not see are not counted as missed: their faces may be smaller than it looks for.
        """
        alive = list(self.tracks)
        pairs, _lost, new = match([t.box for t in alive], [f[0] for f in found], self.settings.iou_match)
        for i, j in pairs:
            self._confirm(alive[i], found[j][0], index, grey)
        for j in new:
            self._start(found[j][0], index, grey)

    def _apply_regions(self, index, results, tracks, grey):
        fresh = []
        for t, found in zip(tracks, results):
            if t not in self.tracks:
                continue
            best, score = None, self.settings.iou_match
            for box, vec in found:
                o = iou(t.box, box)
                if o >= score:
                    best, score = (box, vec), o
            if best is None:
                t.misses += 1
                continue
            self._confirm(t, best[0], index, grey)
            if best[1] is not None:
                fresh.append((t, best[1]))
        self._drop([t for t in tracks if t.misses > self.settings.max_misses])
        return fresh

    def _crossings(self, index):
        """Mark the tracks whose boxes overlap another's by :attr:`Settings.cross_iou` or more as crossed at ``index``.

        When one face passes in front of another, optical flow or a region pass may carry the
        hidden face's box onto the face in front; a crossed track is not :meth:`settled` until a fresh
        vote, so it is embedded again and :meth:`_reidentify` can catch the swap.
        """
        live = [t for t in self.tracks if t.misses <= 1]
        if len(live) < 2:
            return
        overlap = iou_matrix([t.box for t in live], [t.box for t in live])
        np.fill_diagonal(overlap, 0.0)
        for k in np.flatnonzero((overlap >= self.settings.cross_iou).any(axis=1)):
            live[k].crossed = index

    def _reidentify(self, fresh, index, grey):
        """Catch boxes that moved onto another face: ``fresh`` ``[(track, embedding)]`` with such tracks replaced.

        A fresh embedding farther than :attr:`Settings.same_face` (Euclidean; the library's own
        same-person tolerance between photos) from the mean of its track's earlier embeddings
        is someone else's face: the track ends there, and the face gets a new track of its own
        unless another track already follows it. Within one shot a face's embeddings stay much
        closer (under 0.45 on every ``bench_video`` clip; the two boxes carried onto another face
        there measured 0.79 and 0.86).
        """
        if self.model is None:
            return fresh
        out = []
        for t, v in fresh:
            if t.embeddings and engine.distances([np.mean(t.embeddings, axis=0)], v)[0] > self.settings.same_face:
                self._drop([t])
                if any(iou(o.box, t.box) >= self.settings.iou_match for o in self.tracks):
                    continue
                t = self._start(t.box, index, grey)
            out.append((t, v))
        return out

    def _name(self, fresh, index):
        """Predict every face of frame ``index`` that has an embedding in ONE call; fresh embeddings vote."""
        if self.model is None:
            return
        new = {id(t): v for t, v in fresh}
        rows, voters = [], []
        for t in self.tracks:
            v = new.get(id(t), t.embedding)
            if v is None or t.misses > 1:
                continue
            rows.append(v)
            voters.append((t, id(t) in new))
        if not rows:
            return
        for (t, is_new), p in zip(voters, self.model.predict(np.array(rows))):
            if is_new:
                t.remember(new[id(t)])
                t.vote(p.identity, p.confidence)
                t.voted = index
                self.embeddings += 1

    def _seed_points(self, t, grey):
        """Pick up to 30 corners inside the middle of ``t``'s box (the flow image's pixels) for :meth:`_flow`.

        Only a window around the box is searched (a masked whole image would cost about
        as much for each face as for the frame).
        """
        fs = self._flow_scale
        top, right, bottom, left = (t.box * fs).astype(int)
        h, w = bottom - top, right - left
        gh, gw = grey.shape
        y0, y1 = max(0, top + h // 6), min(gh, max(0, bottom - h // 6))
        x0, x1 = max(0, left + w // 6), min(gw, max(0, right - w // 6))
        t.points = None
        if y1 - y0 < 2 or x1 - x0 < 2:
            return
        pad = 2  # corners need their neighbours: search a slightly larger window, keep the inside
        wy0, wx0 = max(0, y0 - pad), max(0, x0 - pad)
        window = grey[wy0:y1 + pad, wx0:x1 + pad]
        mask = np.zeros(window.shape, np.uint8)
        mask[y0 - wy0:y1 - wy0, x0 - wx0:x1 - wx0] = 255
        pts = cv2.goodFeaturesToTrack(window, maxCorners=30, qualityLevel=0.01, minDistance=3, mask=mask)
        if pts is not None and len(pts) >= 3:
            t.points = pts + np.array([wx0, wy0], np.float32)

    def _flow(self, grey):
        with_pts = [t for t in self.tracks if t.points is not None]
        if not with_pts:
            return
        allp = np.concatenate([t.points for t in with_pts]).astype(np.float32)
        nxt, status, _err = cv2.calcOpticalFlowPyrLK(self.prev_grey, grey, allp, None,
                                                    winSize=(15, 15), maxLevel=2)
        status = status.ravel().astype(bool)
        fs = self._flow_scale
        start = 0
        for t in with_pts:
            n = len(t.points)
            old, new, ok = allp[start:start + n, 0], nxt[start:start + n, 0], status[start:start + n]
            start += n
            if ok.sum() < max(3, n // 3):
                t.points = None  # lost the texture: hold the box until the next detection
                continue
            old, new = old[ok], new[ok]
            shift = np.median(new - old, axis=0) / fs
            c_old, c_new = old.mean(axis=0), new.mean(axis=0)
            d_old = np.linalg.norm(old - c_old, axis=1)
            d_new = np.linalg.norm(new - c_new, axis=1)
            valid = d_old > 1e-3
            scale = float(np.clip(np.median(d_new[valid] / d_old[valid]), 0.8, 1.25)) if valid.sum() >= 3 else 1.0
            top, right, bottom, left = t.box
            cy, cx = (top + bottom) / 2 + shift[1], (left + right) / 2 + shift[0]
            hh, hw = (bottom - top) / 2 * scale, (right - left) / 2 * scale
            t.box = np.array([cy - hh, cx + hw, cy + hh, cx - hw])
            t.points = new.reshape(-1, 1, 2)

    def _drop(self, tracks):
        for t in tracks:
            if t in self.tracks:
                self.tracks.remove(t)
                self.finished.append(t)
                self.changes += 1

    def close(self):
        """Cancel the passes still waiting (call when the stream stops early)."""
        for rp, _ in self.regions.values():
            rp.cancel()
        self.regions = {}

    # -- summary ------------------------------------------------------------------
    def appearances(self):
        """Who has appeared so far: the rows of :func:`shared.video.appearances.summarize`."""
        return appearances.summarize(self.finished + self.tracks, self.fps, self.model,
                                     min_frames=self.settings.min_frames)

    def panel_lines(self, top=3):
        """The overlay text: the KOLs seen most so far (seconds on screen)."""
        if self.model is None:
            return ["No model trained yet: faces are not named"]
        known = [a for a in self.appearances() if a["identity"] is not None][:top]
        if not known:
            return ["No KOL seen yet"]
        return ["Seen most so far"] + [f"{a['identity']}  {a['frames'] / self.fps:.1f} s" for a in known]

    def labels(self, views):
        """``[(box, text, known)]`` for :func:`shared.faces.draw.labelled_boxes`."""
        has_model = self.model is not None
        return [(v.box, v.label(has_model), v.known) for v in views]


class _Decoder:
    """Frames of a video decoded by a background thread (OpenCV releases the GIL while decoding)."""

    def __init__(self, path, name=None, depth=4):
        self.q = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.source = frames.iter_frames(path, name=name)  # run() probed the file first: errors come from there
        self.thread = threading.Thread(target=self._run, name="video-decode", daemon=True)
        self.thread.start()

    def _run(self):
        try:
            for item in self.source:
                if not self._put(item):
                    break
            self._put(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader
            self._put(exc)
        finally:
            self.source.close()

    def _put(self, item):
        """Hand ``item`` to the reader, waiting while the queue is full; ``False`` once stopped."""
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def get(self):
        """The next ``(index, t, rgb)``, or ``None`` at the end."""
        item = self.q.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        self.stop.set()
        self.thread.join(5)


def run(path, model, settings=None, executor=None, name=None):
    """Recognise every frame of a video.

    Yields ``(index, t, rgb, views, recognizer)`` for every decodable frame, in
    order (``views``: list of :class:`shared.video.tracks.FaceView`). Closing the
    generator stops the decoding and cancels pending work. Raises
    :class:`shared.faces.frames.VideoError` when the file cannot be opened.
    """
    info = frames.probe(path, name)
    rec = Recognizer(model, info.fps, settings, executor)
    decoder = _Decoder(path, name)
    ahead = collections.deque()
    exhausted = False
    try:
        while True:
            while not exhausted and len(ahead) < max(rec.settings.plan_ahead + 1, rec.settings.lookahead):
                item = decoder.get()
                if item is None:
                    exhausted = True
                    break
                index, t, rgb = item
                ahead.append((index, t, rgb, rec.schedule(index, rgb)))
            if not ahead:
                break
            index, t, rgb, prepared = ahead.popleft()
            views = rec.step(index, rgb, prepared)
            rec.plan(index, [(j, f, p) for j, _, f, p in ahead])
            yield index, t, rgb, views, rec
    finally:
        for *_, prepared in ahead:
            for pending in (prepared.full, prepared.discover):
                if pending is not None:
                    pending.cancel()  # passes of frames that will not be drawn
        ahead.clear()
        rec.close()
        decoder.close()
