"""Embeddings of every photo of a development set (lfw_dev, asian_dev), computed once and cached under ``bench/out/lfw_cache/``.

    .venv/bin/python bench/lfw_cache.py                # fill the lfw_dev cache (2 worker processes)
    .venv/bin/python bench/lfw_cache.py asian_dev 1    # fill the asian_dev cache (1 worker)

A development set is a folder of ``../shared/data/faces/`` (:data:`SETS`) with one sub-folder per person.

Each photo is keyed by the SHA-1 of its bytes: ``bench/out/lfw_cache/<sha1>.npz`` holds
``boxes`` ``(F, 4)`` (top, right, bottom, left) and ``embeddings`` ``(F, 128)`` of every face
found by the app's own path (:func:`shared.faces.engine.analyze`, HOG with one upsampling step;
a second pass with two steps when the first finds nothing). LFW photos are 250x250 with the
photo's subject centred, and asian_dev photos are mostly face crops, so :func:`subject` picks the
face nearest the centre. The cache is shared by the sets (a photo's key is its bytes).
"""
import hashlib
import io
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

from common import ROOT, SHARED_DATA

LFW = SHARED_DATA / "faces" / "lfw_dev"
#: The development sets by name: their folders.
SETS = {"lfw_dev": LFW, "asian_dev": SHARED_DATA / "faces" / "asian_dev"}
CACHE = ROOT / "bench" / "out" / "lfw_cache"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")


def photos(name="lfw_dev"):
    """``[(person, path)]`` for every photo of the development set ``name``, sorted."""
    folder = SETS[name]
    return [(p.name, f) for p in sorted(x for x in folder.iterdir() if x.is_dir())
            for f in sorted(p.iterdir()) if f.suffix.lower() in PHOTO_SUFFIXES]


def _key(path):
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


def _compute(path):
    sys.path.insert(0, str(ROOT))
    from threadpoolctl import threadpool_limits

    from shared.faces import engine, images

    threadpool_limits(limits=1)
    rgb = images.load_image(path)
    found = engine.analyze(rgb, upsample=1) or engine.analyze(rgb, upsample=2)
    boxes = np.array([f.box for f in found], dtype=np.int64).reshape(-1, 4)
    emb = np.array([f.embedding for f in found], dtype=np.float64).reshape(-1, 128)
    buf = io.BytesIO()
    np.savez(buf, boxes=boxes, embeddings=emb, shape=np.array(rgb.shape[:2]))
    target = CACHE / f"{_key(path)}.npz"
    tmp = target.with_suffix(".tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(target)
    return str(path)


def fill(name="lfw_dev", workers=2):
    """Embed the photos of ``name`` not cached yet; returns how many were embedded."""
    CACHE.mkdir(parents=True, exist_ok=True)
    todo = [str(f) for _, f in photos(name) if not (CACHE / f"{_key(f)}.npz").exists()]
    if not todo:
        return 0
    started = time.perf_counter()
    print(f"embedding {len(todo)} {name} photos into {CACHE} ...", flush=True)
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for i, _ in enumerate(pool.imap_unordered(_compute, todo, chunksize=4), 1):
            if i % 200 == 0:
                print(f"  {i}/{len(todo)} ({time.perf_counter() - started:.0f} s)", flush=True)
    return len(todo)


def subject_index(entry):
    """The index of the face nearest the photo's centre in a cache entry ``(boxes, embeddings, shape)``, or
    ``None`` when no face was found."""
    boxes, _emb, shape = entry
    if not len(boxes):
        return None
    h, w = shape
    cy = (boxes[:, 0] + boxes[:, 2]) / 2 - h / 2
    cx = (boxes[:, 1] + boxes[:, 3]) / 2 - w / 2
    return int(np.argmin(cy ** 2 + cx ** 2))


def subject(entry):
    """The embedding of the face nearest the photo's centre, or ``None`` when no face was found."""
    i = subject_index(entry)
    return None if i is None else entry[1][i]


def read_entry(path):
    """The cache entry ``(boxes (F, 4), embeddings (F, 128), image shape (2,))`` of the photo ``path`` (cached)."""
    with np.load(CACHE / f"{_key(path)}.npz", allow_pickle=False) as z:
        return z["boxes"], z["embeddings"], z["shape"]


def load(name="lfw_dev"):
    """``[(person, file name, subject embedding or None, number of faces)]`` for every photo of ``name`` (cache filled first)."""
    fill(name)
    out = []
    for person, f in photos(name):
        found = read_entry(f)
        out.append((person, f.name, subject(found), len(found[0])))
    return out


def faces(name="lfw_dev"):
    """``{person: [subject embedding, ...]}`` of ``name``'s photos in file order (photos without a face left out)."""
    out = {}
    for person, _file, e, _n in load(name):
        out.setdefault(person, [])
        if e is not None:
            out[person].append(e)
    return out


if __name__ == "__main__":
    which = sys.argv[1] if len(sys.argv) > 1 else "lfw_dev"
    n = fill(which, workers=int(sys.argv[2]) if len(sys.argv) > 2 else 2)
    rows = load(which)
    print(f"{len(rows)} photos, {n} newly embedded, no face in {sum(r[2] is None for r in rows)}")
