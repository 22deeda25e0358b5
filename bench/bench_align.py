"""The wizard's align step against a plain face_recognition loop, on the same photos, in one run.

    .venv/bin/python bench/bench_align.py [--repeat N]

1. Ours: every five_celebs photo through the process server's code path
   (``shared.training.sampling.align_photos``: decode, HOG detect, 5-point align, embed,
   write the chip PNG + .npy) on the worker processes of ``shared.faces.parallel``
   (one per core; the worker processes are started and warm before timing, as they are in a
   running server after its first job).
2. Library, used as well as it can be: the way its own ``face_recognition --cpus N``
   command runs (a ``multiprocessing`` pool with as many processes as ours, the
   models loaded once per process before timing), each photo through
   ``load_image_file``, scaled to the same size ours detects on (longer side at most
   ``shared.training.sampling.DETECT_MAX_SIDE``), ``face_locations(upsample 0)`` and
   ``face_encodings(model="small")`` (the 5-point landmarks ours uses too).

The two sides differ in what they do for photos where the plain pass finds no face:
ours retries with one upsampling (finds faces down to ~40 px), the library does not;
so both sides' faces found are printed beside their speed.

Prints photos/second for both and the ratio (ours photos/s divided by the library's
photos/s on the same photos in the same run), then
imports the chips into a fresh pool, imports a second batch, and retrains twice,
counting calls to ``shared.faces.engine.embed``: retraining must re-embed nothing.
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

from shared.recognition.model import train  # noqa: E402
from shared.faces import engine, parallel
from shared.training import sampling
from shared.training.pool import Pool  # noqa: E402


def ours(paths, out):
    tasks = [(str(p), str(out / p.parent.name)) for p in paths]
    for _, folder in tasks:
        Path(folder).mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    results = sampling.align_photos(tasks)
    return time.perf_counter() - t, results


def _library_photo(path):
    """One photo the best way face_recognition offers (runs in a worker of the library's pool)."""
    import cv2
    import face_recognition

    img = face_recognition.load_image_file(path)
    side = max(img.shape[:2])
    if side > sampling.DETECT_MAX_SIDE:  # the size ours detects on
        scale = sampling.DETECT_MAX_SIDE / side
        img = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    boxes = face_recognition.face_locations(img, number_of_times_to_upsample=0)
    return len(face_recognition.face_encodings(img, boxes, model="small"))


def _library_warm(_):
    import face_recognition  # loads the models in this worker

    return face_recognition.face_encodings is not None


def library(paths, processes):
    """face_recognition's own multiprocessing (as ``face_recognition --cpus N``), pool warm before timing."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(processes=processes, initializer=_limit_blas) as mp:
        mp.map(_library_warm, range(processes * 2))
        t = time.perf_counter()
        found = mp.map(_library_photo, [str(p) for p in paths])
        seconds = time.perf_counter() - t
    return seconds, found


def _limit_blas():
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1)  # one BLAS thread per process, as ours (shared.faces.parallel)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side (median reported)")
    args = parser.parse_args()
    paths = sorted(FIVE.rglob("*.jpg"))
    t = time.perf_counter()
    executor = parallel.executor()
    list(executor.map(_warm, range(parallel.workers() * 2)))  # start + load the dlib networks
    print(f"{len(paths)} photos, {parallel.workers()} worker processes (cores available to this process); "
          f"starting them and loading the models took {time.perf_counter() - t:.2f} s (not timed below)")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    ours_t, lib_t = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeat):
            out = Path(tmp) / f"run{i}"
            seconds, results = ours(paths, out)
            ours_t.append(seconds)
            seconds, found = library(paths, parallel.workers())
            lib_t.append(seconds)
        ours_faces = sum(len(r["crops"]) for r in results)
        lib_faces = sum(found)
        ours_none = sum(1 for r in results if not r["crops"])
        lib_none = sum(1 for n in found if not n)
        o, l_ = statistics.median(ours_t), statistics.median(lib_t)
        n = parallel.workers()
        print(f"{'':34s} {'seconds':>8s} {'photos/s':>9s} {'faces':>6s} {'photos with none':>17s}")
        print(f"{f'ours ({n} worker processes)':34s} {o:8.2f} {len(paths) / o:9.2f} {ours_faces:6d} {ours_none:17d}")
        print(f"{f'face_recognition ({n} processes)':34s} {l_:8.2f} {len(paths) / l_:9.2f} {lib_faces:6d} "
              f"{lib_none:17d}")
        print(f"ratio (ours photos/s / library photos/s, same photos, same run): {l_ / o:.2f}x")
        print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
              "(other work on the machine lowers the ratio)")

        # Retraining after an import re-embeds nothing: count every call to engine.embed.
        calls = {"n": 0}
        real_embed = engine.embed

        def counting_embed(chips):
            calls["n"] += len(chips)
            return real_embed(chips)

        engine.embed = counting_embed
        try:
            pool = Pool(Path(tmp) / "pool")
            kols = sorted({p.parent.name for p in paths})
            chip_dir = Path(tmp) / f"run{args.repeat - 1}"
            for name in kols[:-1]:
                pool.add(name, sorted((chip_dir / name).glob("*.png")))
            t = time.perf_counter()
            model = train(*pool.embeddings()[:2], pool.names())
            first = time.perf_counter() - t
            pool.add(kols[-1], sorted((chip_dir / kols[-1]).glob("*.png")))  # a later import
            t = time.perf_counter()
            X, slugs, _ = pool.embeddings()
            read = time.perf_counter() - t
            model = train(X, slugs, pool.names())
            second = time.perf_counter() - t
        finally:
            engine.embed = real_embed
        print(f"train on {len(kols) - 1} KOLs: {first:.2f} s; import 1 more KOL and retrain on "
              f"{model.meta['identities']} KOLs / {model.meta['samples']} chips: {second:.2f} s "
              f"(reading cached embeddings {read * 1000:.0f} ms)")
        print(f"faces embedded during imports and both trainings: {calls['n']} (must be 0)")
    parallel.shutdown()
    return 0 if calls["n"] == 0 else 1


def _warm(_):
    return engine.networks() is not None


if __name__ == "__main__":
    sys.exit(main())
