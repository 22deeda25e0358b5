"""Tight crops: photos that are only a face are found and recognised.

    .venv/bin/python bench/bench_crops.py [--every 4]

From every ``--every``-th lfw_dev photo (its centre face, as cached by ``bench/lfw_cache.py``)
three crops are made:

- ``box``: the photo cut exactly to the face box the detector found (a headshot cut at the chin);
- ``aligned112``: a 112x112 aligned crop (dlib 5-point alignment, padding 0.1: eyebrows to chin);
- ``aligned160``: a 160x160 aligned crop (padding 0.3, the usual "face with a little margin").

For each crop: "one face" = :func:`shared.faces.engine.analyze` finds exactly one face / crops;
"recognised" = that face's embedding is within 0.6 of the embedding of the same face in the
full photo / crops. As a check that faceless photos stay faceless, the top-left 110x110
corner of each photo (background) is searched too. Beside it, in the same run, the plain library call:
``face_recognition.face_locations`` (HOG, one upsampling step) finding exactly one face / crops.
"""
import argparse
import time

import numpy as np

import lfw_cache
from common import ROOT  # noqa: F401
from shared.faces import engine, images

VARIANTS = ("box", "aligned112", "aligned160")


def crops(rgb, box):
    top, right, bottom, left = box
    out = {"box": np.ascontiguousarray(rgb[top:bottom + 1, left:right + 1])}
    shape = engine.landmarks(rgb, box)
    net = engine.networks()
    out["aligned112"] = np.ascontiguousarray(net.dlib.get_face_chip(rgb, shape, size=112, padding=0.1))
    out["aligned160"] = np.ascontiguousarray(net.dlib.get_face_chip(rgb, shape, size=160, padding=0.3))
    return out


def main():
    import face_recognition

    parser = argparse.ArgumentParser()
    parser.add_argument("--every", type=int, default=4)
    args = parser.parse_args()
    started = time.perf_counter()
    lfw_cache.fill()
    counts = {v: {"n": 0, "one": 0, "right": 0, "lib_one": 0, "ms": [], "lib_ms": []} for v in VARIANTS}
    misses = []
    background = [0, 0, 0]  # corner crops, with a face found by ours, by the library
    for i, (person, path) in enumerate(lfw_cache.photos()):
        if i % args.every:
            continue
        with np.load(lfw_cache.CACHE / f"{lfw_cache._key(path)}.npz", allow_pickle=False) as z:
            boxes, emb, shape = z["boxes"], z["embeddings"], z["shape"]
        if not len(boxes):
            continue
        h, w = shape
        j = int(np.argmin(((boxes[:, 0] + boxes[:, 2]) / 2 - h / 2) ** 2 + ((boxes[:, 1] + boxes[:, 3]) / 2 - w / 2) ** 2))
        rgb = images.load_image(path)
        corner = np.ascontiguousarray(rgb[:110, :110])
        background[0] += 1
        background[1] += len(engine.analyze(corner)) > 0
        background[2] += len(face_recognition.face_locations(corner)) > 0
        for variant, crop in crops(rgb, tuple(int(v) for v in boxes[j])).items():
            c = counts[variant]
            c["n"] += 1
            t = time.perf_counter()
            found = engine.analyze(crop)
            c["ms"].append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            c["lib_one"] += len(face_recognition.face_locations(crop)) == 1
            c["lib_ms"].append((time.perf_counter() - t) * 1000)
            if len(found) == 1:
                c["one"] += 1
                c["right"] += np.linalg.norm(found[0].embedding - emb[j]) < engine.SAME_PERSON_DISTANCE
            else:
                misses.append(f"{variant} {person}/{path.name}: {len(found)} faces")
    print(f"{'crop':12s} {'crops':>6s} {'one face (ours)':>18s} {'recognised':>18s} {'one face (library)':>20s} "
          f"{'ours ms':>8s} {'library ms':>10s}")
    for variant, c in counts.items():
        n = max(1, c["n"])
        print(f"{variant:12s} {c['n']:6d} {c['one']:7d} {100 * c['one'] / n:8.1f}% {c['right']:7d} "
              f"{100 * c['right'] / n:8.1f}% {c['lib_one']:9d} {100 * c['lib_one'] / n:8.1f}% "
              f"{np.median(c['ms']):8.1f} {np.median(c['lib_ms']):10.1f}")
    total = sum(c["n"] for c in counts.values())
    one = sum(c["one"] for c in counts.values())
    print(f"all crops: {one}/{total} = {100 * one / max(1, total):.1f}% give one face (target >= 98%)  "
          f"({time.perf_counter() - started:.0f} s)")
    print(f"top-left 110x110 corners (background; a few hold part of another person): a face found in "
          f"{background[1]}/{background[0]} by ours, {background[2]}/{background[0]} by the library")
    if misses:
        print("missed:\n  " + "\n  ".join(misses[:30]))


if __name__ == "__main__":
    main()
