"""The detection passes over one frame, as executor calls, and what they found in frame pixels.

- a **full pass** (:class:`FullPass`) looks at the whole frame, scaled so the smallest face
  worth finding reaches the size dlib's HOG detector finds (:func:`full_scale`), cut into
  overlapping strips, one executor call each, plus one coarse call on the whole frame for faces
  too big for a strip's overlap; each face is embedded once (by the strip its centre lies in, or
  by the coarse call if it is wider than the overlap), except near the ``known`` boxes of faces
  already recognised (:func:`near_known`). A discovery pass is a full pass of one coarse strip
  whose ``known`` boxes are every track's: it embeds only faces that came into view.
- a **region pass** (:class:`RegionPass`) looks only around given boxes: one crop per box,
  scaled so the face is about ``Settings.region_face_px``, all in one executor call.

When a frame gets which pass is :mod:`shared.video.schedule`'s job. The functions sent to the
executor are top-level, so the worker processes can run them (:class:`shared.faces.offload.Call`).

Conventions: frames are RGB ``uint8`` ``(H, W, 3)``; boxes are ``(top, right, bottom, left)``;
embeddings are ``(128,)`` arrays, ``None`` for a face not embedded.
"""
import cv2
import numpy as np

from shared.faces import engine
from shared.faces.boxes import clip_box, iou, region, side
from shared.faces.offload import Call

#: The smallest face (side of the box dlib draws with one upsampling, pixels) that dlib's HOG
#: detector finds without upsampling: faces of 40 px scaled to 60 are found in 34 of 36 lfw_dev
#: photos, scaled to 52 in 7 of 36.
HOG_MIN_PX = 60


# -- work sent to the executor (top-level so a worker process can run it) -----------

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
    """Load dlib in a worker and run each network once (start-up of a server's worker processes)."""
    tile = np.zeros((120, 120, 3), np.uint8)
    find_faces(tile)
    engine.embed([np.zeros((engine.CHIP_SIZE, engine.CHIP_SIZE, 3), np.uint8)])
    return True


# -- the passes --------------------------------------------------------------------------

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


#: Frame height (pixels) from which a full pass looks for faces of ``Settings.min_face_px``; below it the
#: smallest face looked for shrinks with the height (:func:`min_face`).
MIN_FACE_HEIGHT = 720


def min_face(shape, settings):
    """The smallest face (box side, frame pixels) a full pass of a frame of ``shape`` looks for:
    ``Settings.min_face_px`` from :data:`MIN_FACE_HEIGHT` up, in proportion to the height below it, never under
    ``Settings.small_face_px`` (the plain loop's reach, HOG upsampled once): 40 px at 720p and 1080p, 30 px at
    640x360 (where faces of 36 px are common and a pass costs a quarter of a 720p one)."""
    h = shape[0]
    return max(settings.small_face_px, min(settings.min_face_px, settings.min_face_px * h / float(MIN_FACE_HEIGHT)))


def full_scale(shape, settings):
    """The factor a frame of ``shape`` is resized by for a full pass: faces of :func:`min_face` reach
    :data:`HOG_MIN_PX`, within ``Settings.max_full_pixels`` (see the module docstring)."""
    h, w = shape[:2]
    return min(HOG_MIN_PX / float(min_face(shape, settings)), (settings.max_full_pixels / float(h * w)) ** 0.5)


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
        overlap = int(max(2.5 * min_face(rgb.shape, settings), 0.15 * w))  # frame pixels shared by neighbouring strips
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
