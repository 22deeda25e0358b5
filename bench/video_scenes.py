"""Benchmark clips with known ground truth, composed from the real photos (deterministic).

Each clip is a sequence of *scenes* of 2-4 s. A scene has its own background (a
heavily blurred, tinted mosaic of photos, so no face survives in it) and its own set
of faces: face photos from ``lfw_dev`` cut out around the face with a soft
elliptical edge, moving across the frame, turning a little (+-8 degrees), growing and
shrinking (+-10 %) and passing in front of each other. Every scene change is a hard
cut (new background and new faces).

The people are split once (:func:`cast`): the 24 ``lfw_dev`` people with the most
photos are *KOLs* (their first :data:`ENROL` photos train the model, the others are
only used in clips), and people outside that set are *strangers* (never in the model).
A scene shows KOLs and one or two strangers.

Ground truth per frame: for each face, its ``slug`` (the KOL's slug, or ``None`` for a
stranger), its box ``(top, right, bottom, left)`` (the square that dlib's detector
drew on the photo, moved, scaled and turned with it) and the share of that box not
covered by faces drawn in front of it.

Files are written under ``bench/out/`` (git-ignored) and reused while
:data:`VERSION` and the seed are unchanged.
"""
import json
import math
from pathlib import Path

import cv2
import numpy as np

from common import SHARED_DATA, VIDEO

LFW = SHARED_DATA / "faces" / "lfw_dev"
OUT = Path(__file__).resolve().parent / "out"
VERSION = 4  # 4: the truth's key "identity" is "slug" (issue 21); clips are otherwise the same
SEED = 14
KOLS = 24
ENROL = 10


def cast():
    """``(kols, strangers)``: ``{slug: [photo paths]}`` each, chosen deterministically."""
    people = sorted((d for d in LFW.iterdir() if d.is_dir()), key=lambda d: (-len(list(d.glob("*.jpg"))), d.name))
    kols = {d.name.lower(): sorted(d.glob("*.jpg")) for d in people[:KOLS]}
    strangers = {d.name.lower(): sorted(d.glob("*.jpg")) for d in people[KOLS:]}
    return kols, strangers


def enrolment(kols):
    """``(X (N,128), slugs, names)`` from the first :data:`ENROL` photos of each KOL (cached in ``bench/out``)."""
    from shared.faces import engine, images

    cache = OUT / f"enrol-v{VERSION}.npz"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            slugs = [str(s) for s in z["slugs"]]
            return z["X"], slugs, {s: s.replace("_", " ").title() for s in slugs}
    X, slugs, names = [], [], {}
    for slug, paths in kols.items():
        for path in paths[:ENROL]:
            found = engine.analyze(images.load_image(path))
            if found:
                X.append(found[0].embedding)
                slugs.append(slug)
                names[slug] = slug.replace("_", " ").title()
    OUT.mkdir(parents=True, exist_ok=True)
    np.savez(cache, X=np.array(X), slugs=np.array(slugs, dtype=str))
    return np.array(X), slugs, names


def _sprite(path):
    """A face cut out of a photo: ``(rgba, box)`` with the detected box inside the cut-out, or ``None``."""
    from shared.faces import engine, images

    rgb = images.load_image(path)
    boxes = engine.detect(rgb, upsample=1)
    if len(boxes) != 1:
        return None
    top, right, bottom, left = boxes[0]
    side = max(bottom - top, right - left)
    cy, cx = (top + bottom) / 2, (left + right) / 2
    half = int(side * 0.95)
    y0, y1, x0, x1 = int(cy - half * 1.1), int(cy + half * 1.05), int(cx - half), int(cx + half)
    pad = max(0, -y0, -x0, y1 - rgb.shape[0], x1 - rgb.shape[1])
    if pad:
        rgb = cv2.copyMakeBorder(rgb, pad, pad, pad, pad, cv2.BORDER_REFLECT)
        y0, y1, x0, x1 = y0 + pad, y1 + pad, x0 + pad, x1 + pad
    cut = rgb[y0:y1, x0:x1].copy()
    h, w = cut.shape[:2]
    alpha = np.zeros((h, w), np.uint8)
    cv2.ellipse(alpha, (w // 2, int((cy + pad - y0))), (int(w * 0.40), int(h * 0.47)), 0, 0, 360, 255, -1)
    alpha = cv2.GaussianBlur(alpha, (0, 0), max(1.0, w / 40))
    box = (cy + pad - y0 - side / 2, cx + pad - x0 + side / 2, cy + pad - y0 + side / 2, cx + pad - x0 - side / 2)
    return np.dstack([cut, alpha]), box


def _background(rng, photos, size):
    w, h = size
    tiles = [cv2.imread(str(photos[i])) for i in rng.choice(len(photos), 12, replace=False)]
    rows = [np.hstack([cv2.resize(t, (250, 250)) for t in tiles[r * 4:(r + 1) * 4]]) for r in range(3)]
    mosaic = cv2.resize(np.vstack(rows), (w, h), interpolation=cv2.INTER_LINEAR)
    mosaic = cv2.GaussianBlur(mosaic, (0, 0), w / 60)
    tint = np.array(rng.uniform(0.6, 1.3, 3), np.float32)
    ramp = np.linspace(0.75, 1.15, w, dtype=np.float32)[None, :, None]
    bg = np.clip(mosaic.astype(np.float32) * tint * ramp, 0, 255)
    noise = rng.normal(0, 6, (h // 4, w // 4, 1)).astype(np.float32)  # a little texture for the tracker
    bg = np.clip(bg + cv2.resize(noise, (w, h))[..., None], 0, 255)
    return cv2.cvtColor(bg.astype(np.uint8), cv2.COLOR_BGR2RGB)


def _place(frame, rgba, box, centre, side, angle):
    """Draw the sprite so its face box is ``side`` px, centred on ``centre``, turned by ``angle`` degrees."""
    k = side / (box[1] - box[3])
    bcx, bcy = (box[1] + box[3]) / 2, (box[0] + box[2]) / 2
    M = cv2.getRotationMatrix2D((bcx, bcy), angle, k)
    M[:, 2] += np.array(centre) - np.array([bcx, bcy])
    h, w = rgba.shape[:2]
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float64) @ M.T
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
    H, W = frame.shape[:2]
    x0c, y0c, x1c, y1c = max(0, x0), max(0, y0), min(W, x1), min(H, y1)
    if x1c <= x0c or y1c <= y0c:
        return
    M2 = M.copy()
    M2[:, 2] -= [x0c, y0c]
    patch = cv2.warpAffine(rgba, M2, (x1c - x0c, y1c - y0c), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0, 0))
    a = patch[..., 3:4].astype(np.float32) / 255.0
    roi = frame[y0c:y1c, x0c:x1c]
    roi[:] = (roi * (1 - a) + patch[..., :3] * a).astype(np.uint8)


def _covered(box, others):
    """Share of ``box`` covered by the union of ``others`` (boxes), by sampling a 16x16 grid."""
    top, right, bottom, left = box
    ys = np.linspace(top, bottom, 16)[:, None]
    xs = np.linspace(left, right, 16)[None, :]
    hit = np.zeros((16, 16), bool)
    for t, r, b, l in others:
        hit |= (ys >= t) & (ys <= b) & (xs >= l) & (xs <= r)
    return float(hit.mean())


def make_clip(path, size, fps, seconds, n_faces, face_px, seed, kols, strangers):
    """Write a composite clip to ``path`` (mp4v) and return its truth.

    size: ``(width, height)``; n_faces: faces per scene; face_px: ``(min, max)``
    face box side in pixels. Truth: ``{"fps", "frames", "cuts": [frame indices
    starting a scene], "faces": [[{"slug", "box", "visible"}, ...] per frame]}``.
    """
    rng = np.random.default_rng(seed)
    w, h = size
    photos = [p for ps in strangers.values() for p in ps]
    held_out = {slug: paths[ENROL:] for slug, paths in kols.items()}
    stranger_names = sorted(strangers)
    cache = {}

    def sprite(p):
        if p not in cache:
            cache[p] = _sprite(p)
        return cache[p]

    total = int(round(seconds * fps))
    truth = {"fps": fps, "frames": total, "cuts": [], "faces": []}
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    frame_no = 0
    try:
        while frame_no < total:
            length = min(total - frame_no, int(round(rng.uniform(2.0, 4.0) * fps)))
            truth["cuts"].append(frame_no)
            bg = _background(rng, photos, size)
            n_strangers = int(rng.integers(1, 3))
            who = [(s, s) for s in rng.choice(sorted(held_out), n_faces - n_strangers, replace=False)]
            who += [(None, s) for s in rng.choice(stranger_names, n_strangers, replace=False)]
            actors = []
            for slug, person in who:
                paths = held_out[person] if slug else strangers[person]
                for p in rng.permutation(paths):
                    sp = sprite(p)
                    if sp is not None:
                        break
                else:
                    continue
                side = rng.uniform(*face_px)
                margin = side * 1.2
                start = np.array([rng.uniform(margin, w - margin), rng.uniform(margin, h - margin)])
                speed = rng.uniform(0.5, 1.6) * side  # px per second
                heading = rng.uniform(0, 2 * math.pi)
                actors.append({"slug": slug, "sprite": sp, "side": side, "start": start,
                               "v": speed * np.array([math.cos(heading), math.sin(heading)]),
                               "phase": rng.uniform(0, 2 * math.pi), "turn": rng.uniform(4, 8),
                               "period": rng.uniform(1.5, 3.0)})
            for k in range(length):
                t = k / fps
                frame = bg.copy()
                boxes = []
                for a in actors:
                    pos = a["start"] + a["v"] * t
                    for d, lim in ((0, w), (1, h)):  # bounce off the edges
                        m = a["side"] * 0.7
                        span = lim - 2 * m
                        x = (pos[d] - m) % (2 * span)
                        pos[d] = m + (x if x < span else 2 * span - x)
                    wave = math.sin(2 * math.pi * t / a["period"] + a["phase"])
                    side = a["side"] * (1 + 0.1 * wave)
                    angle = a["turn"] * math.sin(2 * math.pi * t / (a["period"] * 1.3) + a["phase"])
                    _place(frame, *a["sprite"], pos, side, angle)
                    boxes.append((pos[1] - side / 2, pos[0] + side / 2, pos[1] + side / 2, pos[0] - side / 2))
                faces_now = []
                for i, (a, box) in enumerate(zip(actors, boxes)):
                    visible = 1.0 - _covered(box, [_ellipse_box(b) for b in boxes[i + 1:]])
                    faces_now.append({"slug": a["slug"], "box": [round(v, 1) for v in box],
                                      "visible": round(visible, 3)})
                truth["faces"].append(faces_now)
                out.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
                frame_no += 1
    finally:
        out.release()
    return truth


def _ellipse_box(box):
    """The part of a face's square that its cut-out (ellipse) really covers: the square grown 50 % wide."""
    top, right, bottom, left = box
    s = (right - left) * 0.5
    return (top - s * 0.6, right + s, bottom + s, left - s)


def upscale(src, path, size):
    """Write ``src`` resized to ``size`` ``(width, height)`` (mp4v); returns the frame count."""
    from shared.faces import frames

    info = frames.probe(src)
    out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), info.fps, size)
    n = 0
    try:
        for _, _, rgb in frames.iter_frames(src):
            out.write(cv2.cvtColor(cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC), cv2.COLOR_RGB2BGR))
            n += 1
    finally:
        out.release()
    return n


CLIPS = {
    # name: (size, fps, seconds, faces per scene, face side range px)
    "tv720": ((1280, 720), 23.976, 12.0, 5, (90, 170)),
    "crowd1080": ((1920, 1080), 25.0, 10.0, 7, (40, 80)),
}


def build(seed=SEED):
    """Make (or reuse) every benchmark clip; returns ``{name: (path, truth or None)}`` and the cast."""
    OUT.mkdir(parents=True, exist_ok=True)
    kols, strangers = cast()
    made = {}
    for i, (name, (size, fps, seconds, n, px)) in enumerate(CLIPS.items()):
        path = OUT / f"{name}-v{VERSION}-s{seed}.mp4"
        tpath = path.with_suffix(".json")
        if not (path.is_file() and tpath.is_file()):
            truth = make_clip(path, size, fps, seconds, n, px, seed * 100 + i, kols, strangers)
            tpath.write_text(json.dumps(truth))
        made[name] = (path, json.loads(tpath.read_text()))
    ham = OUT / f"hamilton1080-v{VERSION}.mp4"
    if not ham.is_file():
        upscale(VIDEO / "short_hamilton_clip.mp4", ham, (1920, 1080))
    made["hamilton1080"] = (ham, None)
    return made, kols, strangers


def score(truth, shown, min_visible=0.7, frames=None):
    """Recognition quality against the truth.

    shown: ``{frame index: [(box, slug or None), ...]}`` (what was drawn).
    frames: the frame indices to score (default: all in ``shown``).
    A face-frame counts when at least ``min_visible`` of the face is uncovered and
    its box lies inside the frame. It is *found* when a drawn box overlaps it
    (IoU >= 0.3, one-to-one), *right* when found with the right answer (the KOL's
    slug; ``None`` for a stranger). Returns ``{"face_frames", "found", "right",
    "kol_frames", "kol_right", "stranger_frames", "strangers_named", "wrong_kol",
    "faces", "changes"}`` (counts): ``faces`` is how many faces (one per person and
    scene) were ever found, ``changes`` how often the answer on a face differed from
    the one on the last frame it was found (settling from "unknown" to a name is one).
    """
    import bisect

    from shared.faces.boxes import match

    c = dict.fromkeys(("face_frames", "found", "right", "kol_frames", "kol_right", "stranger_frames",
                       "strangers_named", "wrong_kol", "faces", "changes"), 0)
    last = {}  # (scene, face) -> the answer on the last frame it was found
    for i in sorted(shown if frames is None else frames):
        scene = bisect.bisect_right(truth["cuts"], i)
        keep = [k for k, f in enumerate(truth["faces"][i]) if f["visible"] >= min_visible and min(f["box"]) >= 0]
        gt = [truth["faces"][i][k] for k in keep]
        drawn = shown.get(i, [])
        pairs, _, _ = match([tuple(f["box"]) for f in gt], [tuple(b) for b, _ in drawn], 0.3)
        got = {gi: drawn[di][1] for gi, di in pairs}
        for gi, answer in got.items():
            key = (scene, keep[gi])
            if key not in last:
                c["faces"] += 1
            elif last[key] != answer:
                c["changes"] += 1
            last[key] = answer
        for gi, f in enumerate(gt):
            c["face_frames"] += 1
            kol = f["slug"] is not None
            c["kol_frames" if kol else "stranger_frames"] += 1
            if gi not in got:
                continue
            c["found"] += 1
            answer = got[gi]
            if answer == f["slug"]:
                c["right"] += 1
                c["kol_right"] += kol
            elif not kol:
                c["strangers_named"] += 1
            elif answer is not None:
                c["wrong_kol"] += 1
    return c


def old_detect_job(small, upsample):
    """The "before" loop's detection job (``bench_video --before``), importable by pool workers."""
    from shared.faces import engine

    return engine.detect(small, upsample=upsample)


def old_embed_job(crop, boxes):
    """The "before" loop's embedding job (``bench_video --before``), importable by pool workers."""
    from shared.faces import engine

    return engine.embed(engine.align(crop, boxes))
