"""The per-frame recognition loop of a video: find faces, follow them, name them (:func:`run`).

Recognising every face in every frame is slow (HOG detection plus a ResNet pass per face) and
makes names flicker. So each frame is, in this order:

- checked for a **scene cut**, which ends every track at once, else its tracks' boxes are
  moved by **optical flow** (:mod:`shared.video.flow`);
- matched with the faces of its **pass**, if it has one (:mod:`shared.video.passes`; which frame
  gets which is :mod:`shared.video.schedule`): a full pass confirms, misses and starts tracks, a
  region pass confirms or misses the tracks it looked around, a discovery pass confirms tracks
  and starts tracks for faces that came into view, embedding those (only those) to name them at once;
- **named**: a fresh embedding far from its track's earlier ones ends that track (someone
  else's face now: it gets a track of its own unless one already follows it), then every face
  with an embedding is predicted in one call and the fresh ones vote; tracks whose boxes overlap
  are marked crossed (:mod:`shared.video.votes`, :mod:`shared.video.tracks`);
- drawn: the tracks seen lately, as :class:`shared.video.tracks.FaceView`.

Detection and embedding run through an executor (``shared.faces.parallel.executor()`` in the
server). Frames are decoded by a thread, a few frames ahead; a full pass is sent when its frame
is decoded and a region pass a few frames before its frame is drawn, and results are applied at
fixed frames, so the output does not depend on timing: the inline executor (``executor=None``)
gives exactly the same frames.

Conventions: frames are RGB ``uint8`` ``(H, W, 3)``; boxes are ``(top, right, bottom, left)``
in the frame's pixels; frame indices count from 0; times are seconds.
"""
import collections
import queue
import threading
from dataclasses import dataclass

import numpy as np

from shared.faces import engine, frames
from shared.faces.boxes import clip_box, iou, match
from shared.video import appearances, unsure
from shared.video.flow import Flow
from shared.video.schedule import Schedule
from shared.video.tracks import SURE, FaceView, TrackSet
from shared.video.votes import Voting


@dataclass
class Settings:
    """Tuning of the recognition loop (defaults measured on bench/bench_video.py's clips)."""

    full_pixels_per_s: float = 2_000_000  # scheduled full passes look at about this many pixels a second
    full_every_s: tuple = (0.5, 3.0)  # ... but come at least and at most this many seconds apart
    full_backoff: float = 2.0  # ... this many times further apart while nothing changes (see Schedule.full_gap)
    detect_every: int = 5  # frames between two region passes
    min_face_px: int = 40  # smallest face (box side, frame pixels) a full pass looks for from 720p up ...
    small_face_px: int = 30  # ... and on smaller frames in proportion to their height, down to this (passes.min_face)
    max_full_pixels: int = 4_700_000  # most pixels a full pass may look at (bounds 4K and big upscales)
    tiles: int = 2  # strips a full pass is cut into (one executor call each)
    region_face_px: int = 90  # a region pass scales each face to about this size
    discover_face_px: int = 80  # a discovery pass (coarse, between full passes) finds faces from this size
    discover_pixels_per_s: float = 800_000  # ... and looks at about this many pixels a second
    region_margin: float = 0.5  # a region pass looks this far (x the face size) around a face
    plan_ahead: int = 3  # a region pass is sent this many frames before its frame is drawn
    flow_side: int = 480  # longest side of the grey copy used for optical flow
    settle_votes: int = 3  # latest votes that must agree before a track counts as settled ...
    sure_vote: float = 0.9  # ... or two agreeing votes, each at least this sure (see Voting.settled)
    cross_iou: float = 0.2  # tracks whose boxes overlap this much have crossed: each needs a fresh vote after
    same_face: float = engine.SAME_PERSON_DISTANCE  # a fresh embedding this far from its track's mean: another face (Voting.someone_else)
    reuse_s: float = 2.0  # a scheduled full pass does not re-embed a settled track voted on this recently (s)
    verify_s: float = 1.0  # a settled track is embedded again when its latest vote is this old (s) ...
    verify_scale: float = 1.4  # ... or its box grew or shrank this many times since (Voting.watch) ...
    verify_shift: float = 1.0  # ... or moved this many box sides ...
    verify_look: float = 0.3  # ... or its face's grey patch correlates less than this with the one then
    max_misses: int = 2  # passes in a row a track may miss before it is dropped ...
    lost_s: float = 1.0  # ... once no pass has seen its face for this long (s): a face turned away a moment is kept
    iou_match: float = 0.3  # least overlap for a detection to continue a track
    cut_diff: float = 30.0  # mean absolute difference (0-255) of 64x36 grey thumbnails that is always a cut ...
    cut_min_diff: float = 10.0  # ... or above this and cut_ratio times the median of the differences since the
    cut_ratio: float = 5.0  # last cut (its last cut_window), see shared.video.flow.is_cut
    cut_window: int = 8
    lookahead: int = 16  # decoded frames kept ahead of drawing (hides the latency of a full pass)
    min_frames: int = 3  # tracks shown on fewer frames are left out of the summary


class Recognizer:
    """The per-frame state of one video: its tracks, the motion between frames, the passes, the votes.

    model: a :class:`shared.recognition.model.Model` or ``None`` (faces are then boxed and
    labelled "no model"). fps: the video's frame rate (for times in the summary).
    executor: something with ``submit(fn, *args)`` (the worker processes) or ``None`` to
    run the work inline.
    """

    def __init__(self, model, fps, settings=None, executor=None):
        self.model = model
        self.fps = float(fps) if fps else 25.0
        self.settings = settings or Settings()
        self.trackset = TrackSet()
        self.flow = Flow(self.settings)
        self.schedule = Schedule(self.settings, self.fps, executor)
        self.voting = Voting(model, self.settings, self.fps)
        self.processed = 0  # frames drawn so far

    # -- as frames are decoded, ahead of drawing ------------------------------------
    def prepare(self, index, rgb):
        """Prepare a decoded frame: its grey copy, whether it starts a new scene, its full pass if due.

        Call in frame order. Returns a :class:`shared.video.schedule.Prepared` for :meth:`step`.
        """
        grey, cut = self.flow.prepare(rgb)
        return self.schedule.prepare(index, rgb, grey, cut, lambda: self._reusable(index), self._followed)

    def _reusable(self, index):
        """Boxes of the tracks a full pass of frame ``index`` need not embed (:meth:`Voting.reusable`);
        none when a scene cut comes before ``index`` (every track ends there)."""
        if self.schedule.cut_ahead(self.processed):
            return []
        return self.voting.reusable(self.trackset.live, index)

    def _followed(self):
        """Boxes of every track followed now (a discovery pass embeds only the faces none of them follows);
        none when a scene cut comes before the frame being prepared (every track ends there)."""
        if self.schedule.cut_ahead(self.processed):
            return []
        return [tuple(t.box) for t in self.trackset.live]

    def plan(self, index, upcoming):
        """After drawing frame ``index``: send the region pass of a frame a few frames ahead, if one is due.

        upcoming: ``[(index, rgb, Prepared)]`` of the decoded frames after ``index``, in order.
        """
        self.schedule.plan(index, upcoming, self.trackset.live, self.voting.settled)

    # -- one frame --------------------------------------------------------------------
    def step(self, index, rgb, prepared):
        """Advance to frame ``index`` (prepared by :meth:`prepare`); returns the :class:`FaceView` list to draw."""
        tracks = self.trackset
        changes = tracks.changes
        self.voting.now = index
        if prepared.cut:
            tracks.drop(list(tracks.live))  # every track's claim to a name ends at a cut
        elif tracks.live:
            self.flow.follow(tracks.live, prepared.grey)
        patch = lambda box: self.flow.patch(box, prepared.grey)  # noqa: E731 - one frame's appearance patches
        fresh = []
        region = None if prepared.full is not None else self.schedule.take_region(index)
        if prepared.full is not None:
            self.schedule.full_applied(index)
            fresh = self._apply_full(index, prepared.full.result(), prepared.grey)
        elif region is not None:
            rp, looked_at = region
            fresh = self._apply_regions(index, rp.result(), looked_at, prepared.grey)
        if prepared.discover is not None and not prepared.cut:
            fresh += self._apply_discovery(index, prepared.discover.result(), prepared.grey)
        if fresh:
            self.voting.vote(self._reidentify(fresh, index, prepared.grey), tracks.live, index, patch)
            unsure.keep_best(tracks.live, index, rgb)
        self.voting.crossings(tracks.live, index)
        self.voting.watch(tracks.live, index, patch)
        self.schedule.drawn(prepared, tracks.changes != changes)
        self.flow.drawn(prepared.grey)
        self.processed = index + 1
        views = []
        for t in tracks.live:
            if t.misses > 1 or (self.model is not None and not t.votes):
                continue  # lost for now, or found by a discovery pass and not recognised yet
            view = self.view(t, rgb.shape)
            t.shown(index, view.slug)
            views.append(view)
        return views

    def view(self, t, shape):
        """How track ``t`` is drawn: its KOL only when that is at least :data:`shared.video.tracks.SURE`
        likely by the rule's naming probability (:attr:`shared.video.tracks.Track.likely`)."""
        known = self.model is not None and t.slug is not None and t.likely >= SURE
        name = self.model.names.get(t.slug, t.slug) if known else None
        return FaceView(clip_box(t.box, shape), t.id, t.slug if known else None, name,
                        round(t.confidence, 2), known, unsure=self.model is not None and t.slug is not None and not known)

    def _apply_full(self, index, found, grey):
        """Match a full pass to the tracks; returns ``[(track, embedding)]`` to vote with."""
        alive = list(self.trackset.live)
        pairs, lost, new = match([t.box for t in alive], [f[0] for f in found], self.settings.iou_match)
        fresh = []
        for i, j in pairs:
            fresh.append((self._confirm(alive[i], found[j][0], index, grey), found[j][1]))
        for i in lost:
            alive[i].misses += 1
        self._drop_lost(alive, index)
        for j in new:
            fresh.append((self._start(found[j][0], index, grey), found[j][1]))
        return [(t, v) for t, v in fresh if v is not None]  # faces not embedded (known) keep their votes

    def _confirm(self, t, box, index, grey):
        """A detection pass saw track ``t`` at ``box``: move it there and follow new points. Returns ``t``.

        A track found again after it was hidden (missed more than once) counts as changed
        (:meth:`Voting.watch`): its next pass embeds it again.
        """
        if t.misses > 1:
            t.changed = index
        t.box = np.asarray(box, dtype=np.float64)
        t.misses, t.confirmed = 0, index
        self.flow.seed(t, grey)
        return t

    def _start(self, box, index, grey):
        """A new track for a face first seen at ``box`` in frame ``index``, with points to follow. Returns it."""
        t = self.trackset.start(box, index)
        self.flow.seed(t, grey)
        return t

    def _apply_discovery(self, index, found, grey):
        """A coarse pass: confirm the tracks it sees, start tracks for new faces. Returns ``[(track, embedding)]``
        to vote with: the faces it embedded (those no track followed when it was sent), so a face coming
        into view is named from this frame on, not from the next region pass.

        Tracks it does not see are not counted as missed: their faces may be smaller than it looks for.
        """
        alive = list(self.trackset.live)
        pairs, _lost, new = match([t.box for t in alive], [f[0] for f in found], self.settings.iou_match)
        fresh = []
        for i, j in pairs:
            fresh.append((self._confirm(alive[i], found[j][0], index, grey), found[j][1]))
        for j in new:
            fresh.append((self._start(found[j][0], index, grey), found[j][1]))
        return [(t, v) for t, v in fresh if v is not None]

    def _apply_regions(self, index, results, looked_at, grey):
        """Match a region pass (the faces found around each track looked at) to those tracks.

        Returns ``[(track, embedding)]`` to vote with.
        """
        fresh = []
        for t, found in zip(looked_at, results):
            if t not in self.trackset.live:
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
        self._drop_lost(looked_at, index)
        return fresh

    def _drop_lost(self, tracks, index):
        """End the ``tracks`` lost at frame ``index``: missed by more than ``Settings.max_misses`` passes in a
        row and unseen for more than ``Settings.lost_s`` (until then passes keep looking for the face there)."""
        s = self.settings
        self.trackset.drop([t for t in tracks if t.misses > s.max_misses and index - t.confirmed > s.lost_s * self.fps])

    def _reidentify(self, fresh, index, grey):
        """Catch boxes that moved onto another face: ``fresh`` ``[(track, embedding)]`` with such tracks replaced.

        A fresh embedding of someone else (:meth:`Voting.someone_else`) ends its track there, and
        the face gets a new track of its own unless another track already follows it.
        """
        if self.model is None:
            return fresh
        out = []
        for t, v in fresh:
            if self.voting.someone_else(t, v):
                self.trackset.drop([t])
                if any(iou(o.box, t.box) >= self.settings.iou_match for o in self.trackset.live):
                    continue
                t = self._start(t.box, index, grey)
            out.append((t, v))
        return out

    def close(self):
        """Cancel the passes still waiting (call when the stream stops early)."""
        self.schedule.cancel()

    # -- summary ------------------------------------------------------------------
    def appearances(self):
        """Who has appeared so far: the rows of :func:`shared.video.appearances.summarize`."""
        return appearances.summarize(self.trackset.every(), self.fps, self.model,
                                     min_frames=self.settings.min_frames)


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


def recognised(rec, source, stop=None):
    """Drive recognizer ``rec`` over decoded frames, keeping its look-ahead: the one loop of the stream and the analysis.

    source: an iterator of ``(index, t, rgb)`` in frame order (read up to the look-ahead,
    ``max(Settings.plan_ahead + 1, Settings.lookahead)`` frames, past the frame drawn). Yields
    ``(index, t, rgb, views)`` for each frame before ``stop`` (``None``: to the source's end), in order.
    Closing the generator (or its end) cancels the passes of frames not drawn and closes ``rec``;
    the source is the caller's to close.
    """
    depth = max(rec.settings.plan_ahead + 1, rec.settings.lookahead)
    ahead = collections.deque()
    exhausted = False
    try:
        while True:
            while not exhausted and len(ahead) < depth:
                item = next(source, None)
                if item is None:
                    exhausted = True
                    break
                index, t, rgb = item
                ahead.append((index, t, rgb, rec.prepare(index, rgb)))
            if not ahead or (stop is not None and ahead[0][0] >= stop):
                break
            index, t, rgb, prepared = ahead.popleft()
            views = rec.step(index, rgb, prepared)
            rec.plan(index, [(j, f, p) for j, _, f, p in ahead])
            yield index, t, rgb, views
    finally:
        for *_, prepared in ahead:
            for pending in (prepared.full, prepared.discover):
                if pending is not None:
                    pending.cancel()  # passes of frames that will not be drawn
        ahead.clear()
        rec.close()


def run(path, model, settings=None, executor=None, name=None):
    """Recognise every frame of a video (:func:`recognised` over frames decoded by a background thread).

    Yields ``(index, t, rgb, views, recognizer)`` for every decodable frame, in
    order (``views``: list of :class:`shared.video.tracks.FaceView`). Closing the
    generator stops the decoding and cancels pending work. Raises
    :class:`shared.faces.frames.VideoError` when the file cannot be opened.
    """
    info = frames.probe(path, name)
    rec = Recognizer(model, info.fps, settings, executor)
    decoder = _Decoder(path, name)
    loop = recognised(rec, iter(decoder.get, None))
    try:
        for index, t, rgb, views in loop:
            yield index, t, rgb, views, rec
    finally:
        loop.close()
        decoder.close()
