"""Video analysis on the queue (issue 24): hours of video analysed per hour of wall time with 1 and 2 workers.

    .venv/bin/python bench/bench_analysis.py [--clips tv720,crowd1080] [--copies 2] [--chunk-s 3] [--workers 1,2]

For each composite clip of ``bench/video_scenes.py`` (cached in ``bench/out``: ``tv720`` 1280x720, 12 s;
``crowd1080`` 1920x1080, 10 s), in the same run:

- **stream**: the live stream at pace 0 with the server's worker processes (every core), timed as
  ``bench/bench_video.py`` times it (:func:`bench_video.ours`);
- **N workers**: ``--copies`` uploads of the clip in one analysis (:func:`shared.library.analysis.create`),
  cut into parts of ``--chunk-s`` seconds, queued (:func:`shared.library.analysis.enqueue`) on a real
  ``redis-server`` and done by N real worker processes (``python -m process_server.worker``, dlib loaded
  before the clock starts: ``tests/servers.py``'s ``Workers``), timed from the queueing to the last
  video's ``done``.

Printed per row: seconds of video, wall seconds, x real time (= hours of video per hour of wall time),
and for the workers the speed-up of N workers over 1 (target: 2 workers >= 1.8x one). The machine's load
average (1 min) is printed before and after each row: on a shared machine other work lowers every
number, so compare rows of one run. The model is bench_video's (24 lfw_dev KOLs and two Hamilton people).
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from common import require_data  # puts the repository on sys.path

import bench_video
import video_scenes


def _uploads(path, copies):
    from werkzeug.datastructures import FileStorage

    return [FileStorage(open(path, "rb"), filename=f"copy{i}-{Path(path).name}") for i in range(copies)]


def _workers_ready(conn, count, timeout_s=300):
    from rq.worker import Worker

    deadline = time.monotonic() + timeout_s
    while len(Worker.all(connection=conn)) < count:
        if time.monotonic() > deadline:
            sys.exit("the queue workers did not start (see their log)")
        time.sleep(0.2)
    time.sleep(1.0)  # their dlib is loaded before they register, but let the registration settle


def queued(path, model, workers, copies, chunk_s, tmp):
    """``(video seconds, wall seconds, states)`` of ``copies`` of ``path`` analysed by ``workers`` real workers."""
    from shared.core import config
    from shared.library import analysis
    from shared.recognition.store import ModelStore
    from shared.training.jobqueue.connection import connect
    from tests.servers import RedisServer, Workers

    base = Path(tempfile.mkdtemp(dir=tmp))
    data = base / "data"
    version = ModelStore(data / "models").save(model)
    redis = RedisServer(base / "redis")
    procs = None
    try:
        procs = Workers(data, redis.url(0), base / "worker.log", count=workers, preload=True)
        conn = connect(redis.url(0))
        _workers_ready(conn, workers)
        limits = {k: config.DEFAULTS[k] for k in ("ANALYSIS_MAX_VIDEO_S", "ANALYSIS_MAX_PIXELS", "ANALYSIS_MAX_VIDEOS")}
        root = analysis.root_of(data)
        record = analysis.create(root, _uploads(path, copies), None, {**limits, "ANALYSIS_CHUNK_S": chunk_s}, version)
        seconds = sum(v["duration_s"] for v in record["videos"])
        started = time.perf_counter()
        analysis.enqueue(conn, root, record)
        while True:
            status = analysis.status(conn, root, record["analysis"], reader=_Admin())
            if status["state"] in ("done", "failed"):
                break
            time.sleep(0.1)
        return seconds, time.perf_counter() - started, [v["state"] for v in status["videos"]]
    finally:
        if procs is not None:
            procs.stop()
        redis.stop()


class _Admin:
    is_admin = True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", default="tv720,crowd1080")
    parser.add_argument("--copies", type=int, default=2, help="uploads of each clip in one analysis")
    parser.add_argument("--chunk-s", type=float, default=3.0, help="ANALYSIS_CHUNK_S for the run")
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    require_data()
    from shared.faces import parallel
    from shared.video import streaming

    clips, kols, _ = video_scenes.build()
    model = bench_video.train_model(kols)
    executor = parallel.executor()
    streaming.warm(executor, parallel.workers())
    counts = [int(n) for n in args.workers.split(",")]
    print(f"cores: {parallel.workers()}; {args.copies} copies per analysis, parts of {args.chunk_s:g} s")
    print(f"{'clip':10s} {'way':10s} {'video s':>8s} {'wall s':>7s} {'x real':>7s} {'vs 1':>6s}  load before/after")
    with tempfile.TemporaryDirectory() as tmp:
        for name in [c for c in args.clips.split(",") if c]:
            path, _truth = clips[name]
            load = os.getloadavg()[0]
            folder, info = bench_video.video_folder(tmp, path)
            fps, n, _shown, _cpu, _first = bench_video.ours(folder, model, executor, streaming.STREAM_SIDE)
            wall = n / fps
            print(f"{name:10s} {'stream':10s} {n / info.fps:8.1f} {wall:7.1f} {fps / info.fps:7.2f} {'':>6s}  "
                  f"{load:.2f}/{os.getloadavg()[0]:.2f}")
            sys.stdout.flush()
            one = None
            for count in counts:
                load = os.getloadavg()[0]
                seconds, wall, states = queued(path, model, count, args.copies, args.chunk_s, tmp)
                speed = seconds / wall
                one = speed if count == 1 else one
                ratio = f"{speed / one:5.2f}x" if one else ""
                flag = "" if set(states) == {"done"} else f"  states {states}"
                print(f"{name:10s} {f'{count} worker' + ('s' if count > 1 else ''):10s} {seconds:8.1f} {wall:7.1f} "
                      f"{speed:7.2f} {ratio:>6s}  {load:.2f}/{os.getloadavg()[0]:.2f}{flag}")
                sys.stdout.flush()
    parallel.shutdown()


if __name__ == "__main__":
    main()
