"""Align photos on the job queue with 1 worker, then 2 workers: photos per second.

Same run, same photos, same chunks; the queue is a real redis-server in a temporary
folder and the workers real processes (``python -m process_server.worker --workers 1``,
dlib loaded before the clock starts). The clock runs from queuing the align step to
its record saying done (chunks on every worker, then the parts put together).

    .venv/bin/python bench/bench_queue.py [--photos N] [--chunk 12] [--set five_celebs|lfw_dev]
"""
import argparse
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from common import ROOT, SHARED_DATA, require_data

sys.path.insert(0, str(ROOT))
from tests.servers import RedisServer, Workers  # noqa: E402


def photos(which, n):
    root = SHARED_DATA / "faces" / which
    paths = sorted(root.rglob("*.jpg"))[:n]
    if len(paths) < n:
        sys.exit(f"only {len(paths)} photos in {root}")
    return paths


def make_job(store, paths, folder):
    zp = folder / "set.zip"
    with zipfile.ZipFile(zp, "w") as zf:
        for i, p in enumerate(paths):
            zf.write(p, f"{p.parent.name}/{i:05d}.jpg")
    return store.create(lambda dest: shutil.copy(zp, dest), "image", "set.zip")


def run(n_workers, paths, chunk, base, redis):
    from shared.training import wizard
    from shared.training.jobqueue import connection, enqueue, status
    from shared.training.jobs import JobStore

    data = base / f"data{n_workers}"
    data.mkdir()
    store = JobStore(data / "jobs")
    job = make_job(store, paths, base)
    url = redis.url(n_workers)
    conn = connection.connect(url)
    workers = Workers(data, url, base / f"workers{n_workers}.log", count=n_workers, preload=True)
    try:
        deadline = time.monotonic() + 120
        while sum(w["alive"] for w in status.overview(conn)["workers"]) < n_workers:  # dlib loaded, listening
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.2)
        plan = wizard.align_plan(store, job, chunk)
        t = time.perf_counter()
        enqueue.start_step(conn, store, job, "align", plan=plan)
        p = status.wait(conn, store, job, "align", timeout=1800)
        elapsed = time.perf_counter() - t
        assert p["state"] == "done", p
        from rq.job import Job

        parts = [rq_job for rq_job in Job.fetch_many(store.state(job)["steps"]["align"]["rq"][:-1], connection=conn)
                 if rq_job]
        busy = sum((part.ended_at - part.started_at).total_seconds() for part in parts
                   if part.ended_at and part.started_at)
        result = store.read(job, "align")
        crops = sum(len(s["crops"]) for k in result["kols"] for s in k["sources"])
        return {"workers": n_workers, "photos": len(paths), "chunks": len(plan["chunks"]), "seconds": elapsed,
                "photos_per_s": len(paths) / elapsed, "faces": crops,
                "workers_used": len({part.worker_name for part in parts}), "chunk_seconds": busy}
    finally:
        workers.stop()


def _spin(_):
    x = 0
    for i in range(6_000_000):
        x += i
    return x


def machine_scaling():
    """Throughput of 2 busy processes over 1 on this machine now (the most 2 workers could gain here)."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        pool.map(_spin, range(2))  # start both
        t = time.perf_counter()
        _spin(0)
        one = time.perf_counter() - t
        t = time.perf_counter()
        pool.map(_spin, range(2))
        two = time.perf_counter() - t
    return 2 * one / two


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=96)
    parser.add_argument("--chunk", type=int, default=12)
    parser.add_argument("--set", default="lfw_dev", choices=["five_celebs", "lfw_dev"])
    args = parser.parse_args()
    require_data()
    paths = photos(args.set, args.photos)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        redis = RedisServer(base / "redis")
        try:
            before = machine_scaling()
            rows = [run(n, paths, args.chunk, base, redis) for n in (1, 2)]
            after = machine_scaling()
        finally:
            redis.stop()
    for r in rows:
        print(f"{r['workers']} worker(s): {r['photos']} photos in {r['chunks']} chunks, {r['seconds']:.1f} s, "
              f"{r['photos_per_s']:.2f} photos/s, {r['faces']} faces; chunks ran on {r['workers_used']} worker(s), "
              f"{r['chunk_seconds']:.1f} s of chunk work in all")
    print(f"2 workers / 1 worker: {rows[1]['photos_per_s'] / rows[0]['photos_per_s']:.2f}x "
          f"(same photos, same run; faces found {rows[0]['faces']} vs {rows[1]['faces']})")
    print(f"this machine now, 2 busy processes / 1 (plain Python loop, before and after): "
          f"{before:.2f}x, {after:.2f}x: the most a second worker could add here")


if __name__ == "__main__":
    main()
