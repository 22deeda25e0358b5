"""Prediction speed: /predictSingleImage against the library's own detect-and-encode, and
a batch of 100 photos on one worker against the worker processes (both cores), in one run.

    .venv/bin/python bench/bench_predict.py

1. Single photo. The main app runs in-process (Flask test client) on a temporary
   DATA_DIR with a model trained from the five_celebs train_ photos. The server-side
   time is the ``elapsed_ms`` the route reports (from the start of the view: form
   parsing, decoding, detection, embedding, the model, drawing, JPEG encoding and
   writing the annotated photo). The library baseline is
   ``face_recognition.load_image_file`` + ``face_locations`` + ``face_encodings`` on
   the same file. Medians of 21 interleaved runs after 2 warm-ups, on a median-sized five_celebs
   photo and on a larger portrait. Target: ratio <= 1.3. The CPU time of this thread
   (the test client runs the view in it) is printed too: unlike wall time it does not
   grow when other processes share the cores.
2. Batch. 100 five_celebs photos through ``shared.recognition.predict.predict_file`` (the batch
   worker: decode, detect, embed, predict, annotated thumbnail): serially in this
   process, then through ``shared.faces.parallel.executor()`` (alternated twice, best of two);
   then the whole ``/predictBatchImage`` route with the same 100 photos in one upload
   (twice, best of two).
"""
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from common import FIVE, KNN, require_data

require_data()

import face_recognition  # noqa: E402

from shared.faces import engine, images, parallel  # noqa: E402
from shared.recognition import predict  # noqa: E402
from shared.recognition.model import train  # noqa: E402
from shared.recognition.store import ModelStore  # noqa: E402


def build_model(data_dir):
    X, slugs = [], []
    for folder in sorted(p for p in FIVE.iterdir() if p.is_dir()):
        for path in sorted(folder.glob("train_*.jpg")):
            found = engine.analyze(images.load_image(path))
            if len(found) == 1:
                X.append(found[0].embedding)
                slugs.append(folder.name)
    store = ModelStore(Path(data_dir) / "models")
    store.save(train(np.array(X), slugs, {s: s.replace("_", " ").title() for s in set(slugs)}))
    return store


def typical_photos():
    """Two typical photos with one face: the median-sized five_celebs photo (small web
    photo) and a larger portrait from knn_examples (about 900x1100)."""
    candidates = []
    for p in sorted(FIVE.rglob("*.jpg")):
        rgb = images.load_image(p)
        if len(engine.detect(rgb)) == 1:
            candidates.append((rgb.shape[0] * rgb.shape[1], p))
    candidates.sort()
    return [candidates[len(candidates) // 2][1], KNN / "train" / "obama" / "obama.jpg"]


def single(client, photo, repeat=21):
    """Interleaved runs (library, no-decode library, route) so that load from other
    processes hits all three alike. Returns medians in ms and the last JSON answer."""
    data = photo.read_bytes()
    rgb = face_recognition.load_image_file(str(photo))
    times = {"library": [], "nodecode": [], "server": [], "client": [], "library_cpu": [], "client_cpu": []}
    body = None
    for i in range(repeat + 2):
        t, c = time.perf_counter(), time.thread_time()
        lib_rgb = face_recognition.load_image_file(str(photo))
        face_recognition.face_encodings(lib_rgb, face_recognition.face_locations(lib_rgb))
        lib, lib_cpu = (time.perf_counter() - t) * 1000, (time.thread_time() - c) * 1000
        t = time.perf_counter()
        face_recognition.face_encodings(rgb, face_recognition.face_locations(rgb))
        nodecode = (time.perf_counter() - t) * 1000
        t, c = time.perf_counter(), time.thread_time()
        r = client.post("/predictSingleImage", data={"file": (io.BytesIO(data), photo.name)},
                        headers={"Accept": "application/json"}, content_type="multipart/form-data")
        seen, seen_cpu = (time.perf_counter() - t) * 1000, (time.thread_time() - c) * 1000
        assert r.status_code == 200, r.json
        body = r.json
        if i >= 2:  # the first two are warm-ups
            for key, value in zip(times, (lib, nodecode, body["elapsed_ms"], seen, lib_cpu, seen_cpu)):
                times[key].append(value)
    return {k: statistics.median(v) for k, v in times.items()}, body


def batch(store, photos, out_dir):
    version = store.current_version()
    tasks = [(i, str(p), p.name, str(store.root), version, str(Path(out_dir) / f"thumb-{i}.jpg"))
             for i, p in enumerate(photos)]
    predict.predict_file(tasks[0])  # load the model and the networks here first
    list(parallel.executor().map(predict.predict_file, tasks[: 2 * parallel.workers()]))  # start the workers
    serial_s = workers_s = float("inf")
    for _ in range(2):  # alternate, keep the best of two: other processes on the machine add noise
        t = time.perf_counter()
        serial = [predict.predict_file(task) for task in tasks]
        serial_s = min(serial_s, time.perf_counter() - t)
        t = time.perf_counter()
        on_workers = list(parallel.executor().map(predict.predict_file, tasks, chunksize=max(1, len(tasks) // 64)))
        workers_s = min(workers_s, time.perf_counter() - t)
    assert [r["faces"] for r in serial] == [r["faces"] for r in on_workers]
    per_worker = {}
    for r in on_workers:
        per_worker[r["worker"]] = per_worker.get(r["worker"], 0) + 1
    return serial_s, workers_s, sorted(per_worker.values(), reverse=True)


def main():
    from main_server import create_app

    with tempfile.TemporaryDirectory() as tmp:
        store = build_model(tmp)
        app = create_app({"TESTING": True, "DATA_DIR": tmp, "SECRET_KEY": "bench"})
        client = app.test_client()
        print(f"{'single photo':52s} {'ms':>8s} {'ratio to library':>17s}")
        for photo in typical_photos():
            h, w = images.load_image(photo).shape[:2]
            ms, body = single(client, photo)
            lib_ms, lib_nodecode_ms, server_ms, client_ms = ms["library"], ms["nodecode"], ms["server"], ms["client"]
            print(f"{photo.parent.name}/{photo.name} {w}x{h}, {len(body['faces'])} face(s): "
                  f"{[f['identity'] or 'unknown' for f in body['faces']]}")
            print(f"{'  library load+face_locations+face_encodings':52s} {lib_ms:8.1f} {1:17.2f}")
            print(f"{'  library face_locations+face_encodings (no decode)':52s} {lib_nodecode_ms:8.1f} "
                  f"{lib_nodecode_ms / lib_ms:17.2f}")
            print(f"{'  /predictSingleImage server-side elapsed_ms':52s} {server_ms:8.1f} {server_ms / lib_ms:17.2f}"
                  f"   target <= 1.30: {'MET' if server_ms / lib_ms <= 1.3 else 'NOT MET'}")
            print(f"{'  /predictSingleImage seen by the test client':52s} {client_ms:8.1f} {client_ms / lib_ms:17.2f}")
            print(f"{'  CPU time (thread): library / whole test-client call':52s} {ms['library_cpu']:8.1f} "
                  f"{ms['client_cpu'] / ms['library_cpu']:17.2f}   ({ms['client_cpu']:.1f} ms, not slowed by other processes)")

        photos = (sorted(FIVE.rglob("*.jpg")) * 2)[:100]
        serial_s, workers_s, per_worker = batch(store, photos, tmp)
        print(f"\nbatch of {len(photos)} photos, {parallel.workers()} core(s):")
        print(f"  1 worker (this process)     {serial_s:6.2f} s  {len(photos) / serial_s:6.1f} photos/s")
        print(f"  {parallel.workers()} worker processes          {workers_s:6.2f} s  "
              f"{len(photos) / workers_s:6.1f} photos/s"
              f"  speed-up {serial_s / workers_s:.2f}x; photos per worker process: {per_worker}")
        blobs = [(p.read_bytes(), f"{i:03d}-{p.name}") for i, p in enumerate(photos)]
        route = []
        for _ in range(2):
            t = time.perf_counter()
            r = client.post("/predictBatchImage", data={"file": [(io.BytesIO(b), n) for b, n in blobs]},
                            headers={"Accept": "application/json"}, content_type="multipart/form-data")
            route.append(time.perf_counter() - t)
            assert r.status_code == 200 and len(r.json["results"]) == len(photos)
        print(f"  /predictBatchImage route    {min(route):6.2f} s  {len(photos) / min(route):6.1f} photos/s "
              f"(best of {[round(x, 2) for x in route]} s; upload parsing included; "
              f"{sum(1 for x in r.json['results'] if x['faces'])} photos with faces)")
        parallel.shutdown()


if __name__ == "__main__":
    main()
