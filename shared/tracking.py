"""Faces followed through a video: tracks, identity by vote, and the per-frame loop.

Recognising every face in every frame is slow (HOG detection plus a ResNet pass per
face) and makes names flicker, since single frames are often blurred or turned. So:

- **detect** every :attr:`Settings.detect_every` frames (and on every scene cut), on a
  copy of the frame resized to about :attr:`Settings.detect_pixels` pixels (small
  videos are enlarged so faces of ~50 px are found, large ones shrunk to bound the cost);
- **track** in between with pyramidal Lucas-Kanade optical flow on a small grey copy
  (the median motion of feature points inside each box moves and scales the box);
  a detection is matched to a track when their boxes overlap (IoU);
- **recognise** a track when it appears and at each detection while it has fewer than
  :attr:`Settings.settle_votes` votes, then again every :attr:`Settings.recheck_s`
  seconds: the face is aligned and embedded at the detected box, and the model's
  :class:`shared.classifier.Prediction` is one *vote*;
- **decide** a track's identity by majority over its votes, "unknown" (``None``)
  being a candidate like any KOL; the label changes only when another candidate has
  strictly more votes than the current one (:func:`decide`), so a single bad frame
  never renames a face.

Detection and embedding run through an executor (``shared.parallel.pool()`` in the
server: the second core works while this thread decodes, tracks and draws), with a
lookahead of a few decoded frames so a detection is ready when its frame is drawn.
Results are applied at fixed frames (a new face's first vote before the frame is
drawn, a re-check's vote at the next detection), so the output does not depend on
timing: the inline executor (``executor=None``) gives exactly the same frames.

Conventions: frames are RGB ``uint8`` ``(H, W, 3)``; boxes are ``(top, right,
bottom, left)`` in the frame's pixels; frame indices count from 0; times are seconds.
"""
import collections
from concurrent.futures import CancelledError, Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import cv2
import numpy as np

from . import annotate, faces, frames


@dataclass
class Settings:
    """Tuning of the recognition loop (defaults measured on the project's clips, see bench/bench_video.py)."""

    detect_every: int = 4  # frames between two detections
    detect_pixels: int = 960 * 540  # size (pixels) of the copy the HOG detector sees
    detect_max_scale: float = 1.5  # never enlarge a frame more than this for detection
    upsample: int = 0  # HOG upsampling of that copy
    flow_side: int = 480  # longest side of the grey copy used for optical flow
    settle_votes: int = 3  # votes before a track counts as settled
    recheck_s: float = 1.0  # a settled track is re-recognised this often
    max_misses: int = 2  # detections in a row a track may miss before it is dropped
    iou_match: float = 0.3  # least overlap for a detection to continue a track
    cut_diff: float = 40.0  # mean absolute grey difference (0-255) between frames that counts as a cut
    lookahead: int = 16  # decoded frames kept ahead, so detections run in parallel
    min_frames: int = 3  # tracks shown on fewer frames are left out of the summary


# -- jobs (top-level so a process pool can run them) -------------------------------

def detect_job(small, upsample):
    """HOG boxes in ``small`` (an RGB frame copy), largest first."""
    return faces.detect(small, upsample=upsample)


def embed_job(crop, boxes):
    """``(len(boxes), 128)`` embeddings of the faces at ``boxes`` inside ``crop``."""
    return faces.embed(faces.align(crop, boxes))


class _Job:
    """A function call sent to the executor, kept so it can be redone inline if the pool broke."""

    def __init__(self, executor, fn, *args):
        self.fn, self.args = fn, args
        self.future = None
        if executor is not None:
            try:
                self.future = executor.submit(fn, *args)
            except (BrokenProcessPool, RuntimeError):  # pool broken or shut down: work here
                self.future = None
        if self.future is None:
            self.future = Future()
            try:
                self.future.set_result(fn(*args))
            except Exception as exc:  # noqa: BLE001 - re-raised by result()
                self.future.set_exception(exc)

    def result(self):
        try:
            return self.future.result()
        except (BrokenProcessPool, CancelledError):
            return self.fn(*self.args)

    def cancel(self):
        self.future.cancel()


# -- geometry ---------------------------------------------------------------------

def iou(a, b):
    """Intersection over union of two boxes ``(top, right, bottom, left)``, in [0, 1]."""
    top, bottom = max(a[0], b[0]), min(a[2], b[2])
    left, right = max(a[3], b[3]), min(a[1], b[1])
    inter = max(0.0, bottom - top) * max(0.0, right - left)
    area = (a[2] - a[0]) * (a[1] - a[3]) + (b[2] - b[0]) * (b[1] - b[3]) - inter
    return float(inter / area) if area > 0 else 0.0


def match(tracks_boxes, det_boxes, threshold):
    """Greedy one-to-one matching by IoU, best overlap first.

    Returns ``(pairs, unmatched_tracks, unmatched_detections)`` where ``pairs`` is a
    list of ``(track_index, detection_index)``; pairs overlap by at least ``threshold``.
    """
    scores = [(iou(t, d), i, j) for i, t in enumerate(tracks_boxes) for j, d in enumerate(det_boxes)]
    scores.sort(reverse=True)
    used_t, used_d, pairs = set(), set(), []
    for score, i, j in scores:
        if score < threshold:
            break
        if i in used_t or j in used_d:
            continue
        used_t.add(i)
        used_d.add(j)
        pairs.append((i, j))
    return (pairs, [i for i in range(len(tracks_boxes)) if i not in used_t],
            [j for j in range(len(det_boxes)) if j not in used_d])


def _scale_for(shape, side):
    return min(1.0, float(side) / max(shape[0], shape[1]))


def _clip_box(box, shape):
    top, right, bottom, left = box
    h, w = shape[:2]
    return (int(np.clip(round(top), 0, h - 1)), int(np.clip(round(right), 0, w - 1)),
            int(np.clip(round(bottom), 0, h - 1)), int(np.clip(round(left), 0, w - 1)))


def crop_around(rgb, box, margin=0.6):
    """A copy of the region around ``box`` (``margin`` of the box size on each side) and the box inside it."""
    top, right, bottom, left = box
    m = int(margin * max(bottom - top, right - left))
    y0, x0 = max(0, top - m), max(0, left - m)
    y1, x1 = min(rgb.shape[0], bottom + m + 1), min(rgb.shape[1], right + m + 1)
    return np.ascontiguousarray(rgb[y0:y1, x0:x1]), (top - y0, right - x0, bottom - y0, left - x0)


# -- voting -----------------------------------------------------------------------

def decide(votes, current=None, has_current=False):
    """The identity a track should show, given its ``votes``.

    votes: ``[(identity or None, confidence), ...]`` in arrival order.
    current / has_current: the identity shown so far (``None`` is "unknown", so
        ``has_current`` says whether there is one at all).

    The candidate with the most votes wins (ties: higher summed confidence); the
    current identity is kept unless the winner has strictly more votes than it.
    Returns the identity (``None`` for unknown); ``current`` when there are no votes.
    """
    if not votes:
        return current
    counts = collections.Counter(v[0] for v in votes)
    weight = collections.defaultdict(float)
    for identity, conf in votes:
        weight[identity] += conf
    leader = max(counts, key=lambda k: (counts[k], weight[k]))
    if has_current and counts.get(current, 0) >= counts[leader]:
        return current
    return leader


class Track:
    """One face followed from frame to frame.

    box: float ``(top, right, bottom, left)`` in frame pixels. votes: ``[(slug or
    None, confidence)]``. spans: ``[[first, last], ...]`` frame ranges where it was drawn.
    """

    def __init__(self, track_id, box, index):
        self.id = track_id
        self.box = np.asarray(box, dtype=np.float64)
        self.votes = []
        self.identity = None
        self.has_identity = False
        self.misses = 0
        self.last_check = None
        self.points = None
        self.spans = []
        self.born = index

    def vote(self, identity, confidence):
        """Add one recognition and re-decide the identity (see :func:`decide`)."""
        self.votes.append((identity, float(confidence)))
        self.identity = decide(self.votes, self.identity, self.has_identity)
        self.has_identity = True

    @property
    def confidence(self):
        """Mean confidence of the votes for the identity shown (0.0 without votes)."""
        own = [c for i, c in self.votes if i == self.identity]
        return float(np.mean(own)) if own else 0.0

    def shown(self, index):
        """Record that the track was drawn on frame ``index``."""
        if self.spans and self.spans[-1][1] == index - 1:
            self.spans[-1][1] = index
        else:
            self.spans.append([index, index])

    @property
    def frames_shown(self):
        return sum(b - a + 1 for a, b in self.spans)


@dataclass
class FaceView:
    """A face as drawn on one frame: box, track, identity (slug or None), display name, confidence, known."""

    box: tuple
    track: int
    identity: object
    name: object
    confidence: float
    known: bool

    def label(self, has_model=True):
        """The text drawn under the box: ``"<name> 0.93"``, ``"unknown 0.21"`` or ``"no model"``."""
        if not has_model:
            return "no model"
        return f"{self.name if self.known else 'unknown'} {self.confidence:.2f}"


def merge_spans(spans):
    """Union of inclusive ``[a, b]`` frame ranges, sorted: ``[[a, b], ...]``."""
    out = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


class Recognizer:
    """The per-frame state of one video: tracks, pending jobs, the summary so far.

    model: a :class:`shared.classifier.Model` or ``None`` (faces are then boxed and
    labelled "no model"). fps: the video's frame rate (for times in the summary).
    executor: something with ``submit(fn, *args)`` (a process pool) or ``None`` to
    run the jobs inline.
    """

    def __init__(self, model, fps, settings=None, executor=None):
        self.model = model
        self.fps = float(fps) if fps else 25.0
        self.s = settings or Settings()
        self.executor = executor
        self.tracks = []
        self.finished = []  # dropped tracks (kept for the summary)
        self.inflight = []  # (deadline frame, track, job)
        self.next_id = 1
        self.prev_grey = None
        self.last_detect = None
        self.prev_thumb = None
        self.processed = 0
        self.detections = 0
        self.recognitions = 0
        self._flow_scale = None
        self._recheck = max(1, int(round(self.s.recheck_s * self.fps)))

    # -- scheduling (called as frames are decoded, ahead of drawing) ---------------
    def schedule(self, index, rgb):
        """Prepare a decoded frame: its grey copy, whether it starts a new scene, its detection job.

        Returns an opaque tuple for :meth:`step`. Call in frame order.
        """
        if self._flow_scale is None:
            self._flow_scale = _scale_for(rgb.shape, self.s.flow_side)
        fs = self._flow_scale
        grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if fs != 1.0:
            grey = cv2.resize(grey, None, fx=fs, fy=fs, interpolation=cv2.INTER_LINEAR)
        thumb = cv2.resize(grey, (32, 18), interpolation=cv2.INTER_AREA).astype(np.int16)
        cut = self.prev_thumb is not None and float(np.abs(thumb - self.prev_thumb).mean()) > self.s.cut_diff
        self.prev_thumb = thumb
        job = None
        if self.last_detect is None or cut or index - self.last_detect >= self.s.detect_every:
            self.last_detect = index
            ds = self._detect_scale(rgb.shape)
            det = rgb if ds == 1.0 else cv2.resize(rgb, None, fx=ds, fy=ds, interpolation=cv2.INTER_LINEAR)
            job = (_Job(self.executor, detect_job, np.ascontiguousarray(det), self.s.upsample), ds)
            self.detections += 1
        return grey, cut, job

    def _detect_scale(self, shape):
        scale = min(self.s.detect_max_scale, (self.s.detect_pixels / float(shape[0] * shape[1])) ** 0.5)
        return 1.0 if abs(scale - 1.0) < 0.05 else scale

    # -- one frame ----------------------------------------------------------------
    def step(self, index, rgb, prepared):
        """Advance to frame ``index`` (prepared by :meth:`schedule`); returns the :class:`FaceView` to draw."""
        grey, cut, job = prepared
        self._collect(index)
        if cut:
            self._drop(list(self.tracks))
        elif self.prev_grey is not None and self.tracks:
            self._flow(grey)
        if job is not None:
            detect, ds = job
            boxes = [_clip_box(np.asarray(b, dtype=np.float64) / ds, rgb.shape) for b in detect.result()]
            self._associate(index, rgb, grey, boxes)
            self._collect(index)  # new faces get their first vote before they are drawn
        self.prev_grey = grey
        self.processed = index + 1
        views = []
        for t in self.tracks:
            if t.misses > 1:
                continue
            t.shown(index)
            views.append(self._view(t, rgb.shape))
        return views

    def _view(self, t, shape):
        known = self.model is not None and t.identity is not None
        name = self.model.names.get(t.identity, t.identity) if known else None
        return FaceView(_clip_box(t.box, shape), t.id, t.identity if known else None, name,
                        round(t.confidence, 2), known)

    def _associate(self, index, rgb, grey, boxes):
        alive = list(self.tracks)
        pairs, lost, new = match([t.box for t in alive], boxes, self.s.iou_match)
        for i, j in pairs:
            alive[i].box = np.asarray(boxes[j], dtype=np.float64)
            alive[i].misses = 0
        for i in lost:
            alive[i].misses += 1
        self._drop([t for t in alive if t.misses > self.s.max_misses])
        fresh = []
        for j in new:
            t = Track(self.next_id, boxes[j], index)
            self.next_id += 1
            self.tracks.append(t)
            fresh.append(t)
        for i, _ in pairs:
            self._seed_points(alive[i], grey)
        for t in fresh:
            self._seed_points(t, grey)
        # recognition: new tracks now, unsettled ones at every detection, settled ones every recheck_s
        if self.model is None:
            return
        matched = [alive[i] for i, _ in pairs if alive[i] in self.tracks]
        for t in fresh + matched:
            if any(x[1] is t for x in self.inflight):
                continue
            due = (t.last_check is None or len(t.votes) < self.s.settle_votes
                   or index - t.last_check >= self._recheck)
            if not due:
                continue
            box = _clip_box(t.box, rgb.shape)
            crop, inner = crop_around(rgb, box)
            t.last_check = index
            deadline = index if t in fresh else index + self.s.detect_every
            self.inflight.append((deadline, t, _Job(self.executor, embed_job, crop, [inner])))
            self.recognitions += 1

    def _collect(self, index):
        keep = []
        for deadline, t, job in self.inflight:
            if deadline > index:
                keep.append((deadline, t, job))
                continue
            if t not in self.tracks:
                continue
            vectors = job.result()
            for p in self.model.predict(vectors):
                t.vote(p.identity, p.confidence)
        self.inflight = keep

    def _seed_points(self, t, grey):
        fs = self._flow_scale
        top, right, bottom, left = (t.box * fs).astype(int)
        h, w = bottom - top, right - left
        mask = np.zeros_like(grey)
        mask[max(0, top + h // 6):max(0, bottom - h // 6), max(0, left + w // 6):max(0, right - w // 6)] = 255
        pts = cv2.goodFeaturesToTrack(grey, maxCorners=30, qualityLevel=0.01, minDistance=3, mask=mask)
        t.points = pts if pts is not None and len(pts) >= 3 else None

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
        gone = [x for x in self.inflight if x[1] not in self.tracks]
        for _, _, job in gone:
            job.cancel()
        self.inflight = [x for x in self.inflight if x[1] in self.tracks]

    def close(self):
        """Cancel the jobs still waiting (call when the stream stops early)."""
        for _, _, job in self.inflight:
            job.cancel()
        self.inflight = []

    # -- summary ------------------------------------------------------------------
    def appearances(self):
        """Who has appeared so far: ``[{"identity", "first_s", "last_s", "frames"}]``, most frames first.

        identity is the KOL's display name, or ``None`` for faces that read unknown
        (or every face when there is no model). Tracks drawn on fewer than
        ``min_frames`` frames are left out. ``frames`` counts frames where at
        least one face with that identity was drawn.
        """
        groups = collections.defaultdict(list)
        for t in self.finished + self.tracks:
            if t.frames_shown < self.s.min_frames:
                continue
            known = self.model is not None and t.identity is not None
            name = self.model.names.get(t.identity, t.identity) if known else None
            groups[name].extend(t.spans)
        out = []
        for name, spans in groups.items():
            merged = merge_spans(spans)
            out.append({"identity": name, "first_s": round(merged[0][0] / self.fps, 2),
                        "last_s": round(merged[-1][1] / self.fps, 2),
                        "frames": int(sum(b - a + 1 for a, b in merged))})
        out.sort(key=lambda a: (a["identity"] is None, -a["frames"], a["first_s"]))
        return out

    def panel_lines(self, top=3):
        """The overlay text: the KOLs seen most so far (seconds on screen)."""
        if self.model is None:
            return ["No model trained yet: faces are not named"]
        known = [a for a in self.appearances() if a["identity"] is not None][:top]
        if not known:
            return ["No KOL seen yet"]
        return ["Seen most so far"] + [f"{a['identity']}  {a['frames'] / self.fps:.1f} s" for a in known]


def run(path, model, settings=None, executor=None, name=None):
    """Recognise every frame of a video.

    Yields ``(index, t, rgb, views, recognizer)`` for every decodable frame, in
    order (``views``: list of :class:`FaceView`). Closing the generator stops the
    decoding and cancels pending jobs. Raises :class:`shared.frames.VideoError`
    when the file cannot be opened.
    """
    info = frames.probe(path, name)
    rec = Recognizer(model, info.fps, settings, executor)
    source = frames.iter_frames(path, name=name)
    ahead = collections.deque()
    exhausted = False
    try:
        while True:
            while not exhausted and len(ahead) < max(1, rec.s.lookahead):
                try:
                    index, t, rgb = next(source)
                except StopIteration:
                    exhausted = True
                    break
                ahead.append((index, t, rgb, rec.schedule(index, rgb)))
            if not ahead:
                break
            index, t, rgb, prepared = ahead.popleft()
            views = rec.step(index, rgb, prepared)
            yield index, t, rgb, views, rec
    finally:
        for *_, (_, _, job) in ahead:
            if job is not None:
                job[0].cancel()  # detections of frames that will not be drawn
        ahead.clear()
        rec.close()
        source.close()


def draw(rgb, views, rec):
    """The annotated frame: a box and label per face and the "seen most" panel. Returns a new array."""
    has_model = rec.model is not None
    out = annotate.draw_faces(rgb, [(v.box, v.label(has_model), v.known) for v in views])
    return annotate.draw_panel(out, rec.panel_lines())


def encode(rgb, quality=80):
    """JPEG bytes of an RGB frame (OpenCV's encoder: about twice as fast as Pillow's)."""
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()
