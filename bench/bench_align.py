"""The wizard's align step against a plain face_recognition loop, on the same photos, in one run.

    .venv/bin/python bench/bench_align.py [--repeat N]

1. Ours: every five_celebs photo through the process server's code path
   (``shared.sampling.align_photos``: decode, HOG detect, 5-point align, embed,
   write the chip PNG + .npy) on the worker processes of ``shared.parallel``
   (one per core; the pool is started and warm before timing, as it is in a
   running server after its first job).
2. Library: ``face_recognition.load_image_file`` + ``face_locations`` +
   ``face_encodings`` in one process over the same files.

Prints photos/second for both and the ratio (target >= 1.7 on 2 cores), then
imports the chips into a fresh pool, imports a second batch, and retrains twice,
counting calls to ``shared.faces.embed``: retraining must re-embed nothing.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import FIVE, require_data

require_data()

from shared import classifier, faces, parallel, sampling  # noqa: E402
from shared.pool import Pool  # noqa: E402


def ours(paths, out):
    tasks = [(str(p), str(out / p.parent.name)) for p in paths]
    for _, folder in tasks:
        Path(folder).mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    results = sampling.align_photos(tasks)
    return time.perf_counter() - t, results


def library(paths):
    import face_recognition

    t = time.perf_counter()
    found = []
    for p in paths:
        img = face_recognition.load_image_file(str(p))
        boxes = face_recognition.face_locations(img)
        found.append(face_recognition.face_encodings(img, boxes))
    return time.perf_counter() - t, found


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side (median reported)")
    args = parser.parse_args()
    paths = sorted(FIVE.rglob("*.jpg"))
    t = time.perf_counter()
    executor = parallel.pool()
    list(executor.map(_warm, range(parallel.workers() * 2)))  # start + load models
    print(f"{len(paths)} photos, {parallel.workers()} worker processes (cores available to this process); "
          f"starting the pool and loading the models took {time.perf_counter() - t:.2f} s (not timed below)")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    ours_t, lib_t = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            out = Path(tmp) / f"run{i}"
            seconds, results = ours(paths, out)
            ours_t.append(seconds)
            seconds, found = library(paths)
            lib_t.append(seconds)
        ours_faces = sum(len(r["crops"]) for r in results)
        lib_faces = sum(len(f) for f in found)
        o, l_ = statistics.median(ours_t), statistics.median(lib_t)
        print(f"{'':28s} {'seconds':>8s} {'photos/s':>9s} {'faces':>6s}")
        print(f"{'ours (process server path)':28s} {o:8.2f} {len(paths) / o:9.2f} {ours_faces:6d}")
        print(f"{'face_recognition loop':28s} {l_:8.2f} {len(paths) / l_:9.2f} {lib_faces:6d}")
        print(f"ratio (ours / library photos/s): {l_ / o:.2f}x   target >= 1.7x")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
              "(other work on the machine lowers the ratio)")

        # Retraining after an import re-embeds nothing: count every call to faces.embed.
        calls = {"n": 0}
        real_embed = faces.embed

        def counting_embed(chips):
            calls["n"] += len(chips)
            return real_embed(chips)

        faces.embed = counting_embed
        try:
            pool = Pool(Path(tmp) / "pool")
            kols = sorted({p.parent.name for p in paths})
            chip_dir = Path(tmp) / f"run{args.repeat - 1}"
            for name in kols[:-1]:
                pool.add(name, sorted((chip_dir / name).glob("*.png")))
            t = time.perf_counter()
            model = classifier.train(*pool.embeddings()[:2], pool.names())
            first = time.perf_counter() - t
            pool.add(kols[-1], sorted((chip_dir / kols[-1]).glob("*.png")))  # a later import
            t = time.perf_counter()
            X, slugs, _ = pool.embeddings()
            read = time.perf_counter() - t
            model = classifier.train(X, slugs, pool.names())
            second = time.perf_counter() - t
        finally:
            faces.embed = real_embed
        print(f"train on {len(kols) - 1} KOLs: {first:.2f} s; import 1 more KOL and retrain on "
              f"{model.meta['identities']} KOLs / {model.meta['samples']} chips: {second:.2f} s "
              f"(reading cached embeddings {read * 1000:.0f} ms)")
        print(f"faces embedded during imports and both trainings: {calls['n']} (must be 0)")
    parallel.shutdown()
    return 0 if calls["n"] == 0 else 1


def _warm(_):
    return faces.models() is not None


if __name__ == "__main__":
    sys.exit(main())
