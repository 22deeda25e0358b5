"""The real development clips (``../shared/data/video/dev/``) for bench_video: truth, models, the plain loop, scores.

- **truth** (:func:`load_truth`): ``bench/truth/<clip>.json`` (how it was made: ``bench/truth/README.md``):
  every second frame (``stride`` 2), each face dlib's HOG detector finds there (upsampled once,
  as face_recognition's defaults), with who it is: an enrolled person's name, ``null`` for a
  stranger; a truth track id per face (one face followed through one shot); the known cuts.
- **models** (:func:`model_for`): the clip's people from their reference photos (Friends: 3 each;
  sweden: ``Person_A`` .. ``Person_F``, 2 stills each; the clip's other people are strangers)
  plus :data:`DISTRACTORS` other KOLs (lfw_dev, 10 photos each, from :mod:`video_scenes`).
- **plain loop** (:func:`plain_shown`): ``face_recognition.face_locations`` + ``face_encodings``
  (library defaults) on every truth frame, named by the same model; the boxes and embeddings
  are computed once and cached in ``bench/out/plain-<clip>-s2.npz`` (they do not depend on the
  model); its speed is timed on the first frames in each run (bench_video's ``--plain-frames``).
- **score** (:func:`score`): per truth face-frame, the drawn box over it (IoU >= 0.3, one-to-one)
  and its answer.

Boxes are ``(top, right, bottom, left)`` in the clip's pixels; frame indices count from 0.
"""
import bisect
import json
import time
from pathlib import Path

import numpy as np

from common import VIDEO

import video_scenes

DEV = VIDEO / "dev"
TRUTH = Path(__file__).resolve().parent / "truth"
CLIPS = ("friends_tux", "sweden_promo")
#: lfw_dev KOLs enrolled beside each clip's people (the first of video_scenes' KOLs).
DISTRACTORS = 20
#: The sweden_promo people enrolled (the others, Person_G .. Person_I among them, are strangers).
SWEDEN_ENROLLED = ("Person_A", "Person_B", "Person_C", "Person_D", "Person_E", "Person_F")


def load_truth(clip):
    """The truth of ``clip`` (module docstring), with ``slug`` added to each face (``None``: a stranger)."""
    from shared.training.pool import kol_slug

    truth = json.loads((TRUTH / f"{clip}.json").read_text())
    truth["frames_scored"] = sorted(int(k) for k in truth["faces"])
    truth["faces"] = {int(k): v for k, v in truth["faces"].items()}
    for faces in truth["faces"].values():
        for f in faces:
            f["slug"] = kol_slug(f["who"]) if f["who"] else None
    return truth


def people(clip):
    """``{name: [photo paths]}`` of the people enrolled for ``clip``."""
    folder = DEV / f"{clip}_people"
    names = SWEDEN_ENROLLED if clip == "sweden_promo" else sorted(d.name for d in folder.iterdir() if d.is_dir())
    return {n: sorted(p for p in (folder / n).iterdir() if p.is_file()) for n in names}


def model_for(clip):
    """The model of ``clip``: its people (slugs of :func:`shared.training.pool.kol_slug`) plus the distractors."""
    from shared.faces import engine, images
    from shared.recognition.model import train
    from shared.training.pool import kol_slug

    kols, _ = video_scenes.cast()
    X, slugs, names = video_scenes.enrolment(kols)
    keep = [k for k, s in enumerate(slugs) if s in list(dict.fromkeys(slugs))[:DISTRACTORS]]
    X, slugs = [X[k] for k in keep], [slugs[k] for k in keep]
    names = {s: names[s] for s in slugs}
    for name, photos in people(clip).items():
        for photo in photos:
            found = engine.analyze(images.load_image(photo))
            if found:
                X.append(found[0].embedding)
                slugs.append(kol_slug(name))
                names[kol_slug(name)] = name
    return train(np.array(X), slugs, names)


def plain_cache(clip, stride=2):
    """``{frame: [(box, embedding)]}`` of the plain loop on every ``stride``-th frame (cached in bench/out)."""
    import face_recognition

    from shared.faces import frames

    cache = video_scenes.OUT / f"plain-{clip}-s{stride}.npz"
    if not cache.is_file():
        idx, boxes, vecs = [], [], []
        for i, _, rgb in frames.iter_frames(DEV / f"{clip}.mp4"):
            if i % stride:
                continue
            locs = face_recognition.face_locations(rgb)
            for b, e in zip(locs, face_recognition.face_encodings(rgb, locs)):
                idx.append(i), boxes.append(b), vecs.append(e)
        video_scenes.OUT.mkdir(parents=True, exist_ok=True)
        np.savez(cache, frame=np.array(idx), box=np.array(boxes).reshape(-1, 4), vec=np.array(vecs).reshape(-1, 128))
    with np.load(cache) as z:
        out = {}
        for f, b, v in zip(z["frame"], z["box"], z["vec"]):
            out.setdefault(int(f), []).append((tuple(int(x) for x in b), v))
    return out


def plain_shown(clip, model, frames_scored):
    """What the plain loop names on the truth frames: ``{frame: [(box, slug or None)]}``."""
    found = plain_cache(clip)
    shown = {}
    for i in frames_scored:
        faces = found.get(i, [])
        preds = model.predict(np.array([v for _, v in faces])) if faces else []
        shown[i] = [(b, p.slug) for (b, _), p in zip(faces, preds)]
    return shown


def plain_speed(clip, model, limit):
    """Frames a second of the plain loop (detect + embed + predict every frame) on the first ``limit`` frames."""
    import face_recognition

    from shared.faces import frames

    started, n = time.perf_counter(), 0
    for _i, _, rgb in frames.iter_frames(DEV / f"{clip}.mp4", max_frames=limit):
        locs = face_recognition.face_locations(rgb)
        enc = face_recognition.face_encodings(rgb, locs)
        if enc:
            model.predict(np.array(enc))
        n += 1
    return n / (time.perf_counter() - started)


def score(truth, shown):
    """Counts of what ``shown`` (``{frame: [(box, slug or None)]}``) drew on the truth's faces.

    ``kol_frames``: face-frames of enrolled people; ``right``: named right; ``other_kol``: named as
    another KOL; ``missed``: neither (not found, "unknown" or "?"); ``stranger_frames`` /
    ``strangers_named``; ``named``: face-frames with any name; ``named_elsewhere``: named boxes over
    no truth face (a face dlib's HOG does not see there, or a false detection); ``faces``: truth
    tracks found at least once; ``changes``: how often the answer on a truth track changed.
    """
    from shared.faces.boxes import match

    c = dict.fromkeys(("kol_frames", "right", "other_kol", "missed", "stranger_frames", "strangers_named",
                       "named", "named_elsewhere", "faces", "changes"), 0)
    last = {}
    for i in truth["frames_scored"]:
        gt = truth["faces"][i]
        drawn = shown.get(i, [])
        pairs, _, extra = match([tuple(f["box"]) for f in gt], [tuple(b) for b, _ in drawn], 0.3)
        got = {gi: drawn[di][1] for gi, di in pairs}
        c["named_elsewhere"] += sum(1 for di in extra if drawn[di][1] is not None)
        for gi, f in enumerate(gt):
            answer = got.get(gi, "missing")
            if gi in got:
                key = f["track"]
                if key not in last:
                    c["faces"] += 1
                elif last[key] != answer:
                    c["changes"] += 1
                last[key] = answer
            named = answer not in (None, "missing")
            c["named"] += named
            if f["slug"] is None:
                c["stranger_frames"] += 1
                c["strangers_named"] += named
            else:
                c["kol_frames"] += 1
                if answer == f["slug"]:
                    c["right"] += 1
                elif named:
                    c["other_kol"] += 1
                else:
                    c["missed"] += 1
    return c


def describe(c):
    """One line of :func:`score`'s counts, as shares."""
    k, n = max(1, c["kol_frames"]), max(1, c["named"])
    return (f"right {100 * c['right'] / k:5.1f}%  other KOL {c['other_kol']} ({100 * c['other_kol'] / n:.1f}% of "
            f"{c['named']} named)  missed {100 * c['missed'] / k:5.1f}%  strangers named "
            f"{c['strangers_named']}/{c['stranger_frames']}  named off-truth {c['named_elsewhere']}  "
            f"changes {c['changes']} on {c['faces']} faces ({c['changes'] / max(1, c['faces']):.2f}/face)")


def cut_check(clip, settings=None):
    """The cut detector of :class:`shared.video.flow.Flow` over every frame of ``clip``, against the known cuts.

    Returns ``(hits, misses, false_alarms)``: lists of frame indices.
    """
    from shared.faces import frames
    from shared.video.flow import Flow
    from shared.video.recognizer import Settings

    truth = json.loads((TRUTH / f"{clip}.json").read_text())
    flow = Flow(settings or Settings())
    found = [i for i, _, rgb in frames.iter_frames(DEV / f"{clip}.mp4") if flow.prepare(rgb)[1]]
    cuts = set(truth["cuts"])
    return sorted(cuts & set(found)), sorted(cuts - set(found)), sorted(set(found) - cuts)


def shot_of(truth, index):
    """The shot number (0 first) of frame ``index``."""
    return bisect.bisect_right(truth["cuts"], index)
