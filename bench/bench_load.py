"""Load: concurrent single-photo predictions while a training job runs and a video streams.

    .venv/bin/python bench/bench_load.py [--clients 8] [--duration 60]

Starts the three servers the way the Procfile does (gunicorn; main 2 workers x 4
threads, process 1 x 8, video 1 x 16) on free loopback ports with a temporary
DATA_DIR, then:

1. setup (not measured): trains a first model through the real wizard (upload the
   five_celebs ``train_`` photos to main ``/trainByImage``, process ``/align``,
   ``/clean``, ``/import_result``, ``/train_model``), uploads a clip to main
   ``/predictVideoResult`` and warms every server up (one stream, a few predictions);
2. measures each server's memory (resident set of its whole process tree: gunicorn
   master, workers and their face-engine pool processes);
3. for ``--duration`` seconds: ``--clients`` threads post single photos (the
   five_celebs ``val_`` photos, in turn) to ``/predictSingleImage``; one thread runs
   training jobs over and over (upload, align, clean, import, train: the whole
   wizard, so the heavy align step overlaps the load); one thread watches the video
   stream (``/video_feed``, normal pace), starting it again when it ends;
4. reports requests/s, latency p50/p95/p99, the error count (every answer that is
   not a 200 with faces, and every connection error), training steps and video
   frames done during the window, and each server's memory before and after.

Bounded: at most 64 clients and 600 s; the servers listen on 127.0.0.1 only and
are stopped at the end. Needs ``../shared/data`` (set KOL_SHARED_DATA).
The results are printed and written to ``bench/out/load.json``.
"""
import argparse
import io
import json
import os
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import requests
from common import FIVE, ROOT, VIDEO, require_data

from tests.servers import LiveServers, rss_mib

JSON = {"Accept": "application/json"}
SERVERS = {"main": (2, 4), "process": (1, 8), "video": (1, 16)}  # workers, threads (as in the Procfile)
#: Memory growth per server over the run that is still fine (MiB): caches, a warmed-up pool.
MEMORY_BOUND_MIB = 150


class Stack(LiveServers):
    """The three servers with the Procfile's workers and threads (:data:`SERVERS`)."""

    def __init__(self, data_dir, log_dir):
        super().__init__(data_dir, log_dir, names=())
        try:
            for name, (workers, threads) in SERVERS.items():
                self.start(name, workers, threads)
        except BaseException:
            self.stop()
            raise

    def memory(self):
        return {name: rss_mib(proc.pid) for name, proc in self.procs.items()}


def training_zip(per_kol):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for folder in sorted(p for p in FIVE.iterdir() if p.is_dir()):
            for path in sorted(folder.glob("train_*.jpg"))[:per_kol]:
                zf.write(path, f"{folder.name}/{path.name}")
    return buf.getvalue()


def wizard(servers, data, timeout=600):
    """One whole training job through the real routes; returns the number of steps done."""
    urls, http = servers.urls, servers.http
    r = http.post(urls["main"] + "/trainByImage", files={"zip": ("kols.zip", data)}, headers=JSON,
                      allow_redirects=False, timeout=120)
    assert r.status_code == 303, r.text
    job = r.headers["Location"].rsplit("=", 1)[1]
    proc = urls["process"]

    def wait(stage):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            p = http.get(proc + "/processingProgress", params={"job": job}, headers=JSON, timeout=30).json()
            if p["stage"] == stage and p["state"] in ("done", "failed"):
                assert p["state"] == "done", p
                return
            time.sleep(0.5)
        raise TimeoutError(stage)

    assert http.post(proc + "/align", data={"job": job}, headers=JSON, timeout=60).status_code == 202
    wait("align")
    assert http.post(proc + "/clean", data={"job": job}, headers=JSON, timeout=120).status_code == 200
    assert http.post(proc + "/import_result", data={"job": job}, headers=JSON, timeout=120).status_code == 200
    assert http.post(proc + "/train_model", data={"job": job}, headers=JSON, timeout=60).status_code == 202
    wait("train")
    return 5


def _try(fn, *a):
    try:
        return fn(*a)
    except requests.RequestException as exc:
        return repr(exc)[:80]


def percentile(values, q):
    values = sorted(values)
    if not values:
        return None
    k = (len(values) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--per-kol", type=int, default=12, help="photos per KOL in each training zip")
    parser.add_argument("--main-threads", type=int, default=SERVERS["main"][1],
                        help="threads per main-server worker (the Procfile's value by default)")
    args = parser.parse_args()
    require_data()
    if not 1 <= args.clients <= 64 or not 1 <= args.duration <= 600:
        raise SystemExit("at most 64 clients and 600 seconds")
    photos = [p.read_bytes() for p in sorted(FIVE.rglob("val_*.jpg"))]
    clip = (VIDEO / "short_hamilton_clip.mp4").read_bytes()
    SERVERS["main"] = (SERVERS["main"][0], args.main_threads)
    work = Path(tempfile.mkdtemp(prefix="kol-load-"))
    stack = Stack(work / "data", work)
    urls, http = stack.urls, stack.http  # http: signed in with the stack's admin token
    assert all(u.startswith("http://127.0.0.1:") for u in urls.values())
    try:
        print("setup: first model through the wizard ...", flush=True)
        data = training_zip(args.per_kol)
        t = time.monotonic()
        wizard(stack, data)
        print(f"  done in {time.monotonic() - t:.1f} s", flush=True)
        r = http.post(urls["main"] + "/predictVideoResult", files={"file": ("clip.mp4", clip)},
                          allow_redirects=False, timeout=120)
        assert r.status_code == 303, r.text
        video = r.headers["Location"].rsplit("=", 1)[1]
        feed = f"{urls['video']}/video_feed?video={video}&pace=0"
        with http.get(feed, stream=True, timeout=120) as s:  # warm the video server up: one whole stream
            for _ in s.iter_content(65536):
                pass
        def warm(photo):
            return http.post(urls["main"] + "/predictSingleImage", files={"file": ("p.jpg", photo)},
                                 headers=JSON, timeout=120).status_code

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(args.clients) as ex:  # concurrent, so that both main workers load dlib now
            for _ in range(3):
                warmed = list(ex.map(lambda p: _try(warm, p), photos[: 2 * args.clients]))
                if not set(warmed) <= {200, 422}:
                    print(f"  warm-up answers: {sorted(set(map(str, warmed)))}", flush=True)
        before = stack.memory()
        print(f"memory before (MiB): {before}", flush=True)

        stop = threading.Event()
        latencies, errors, statuses = [], [], {}
        lock = threading.Lock()
        counters = {"train_steps": 0, "train_jobs": 0, "video_frames": 0, "video_streams": 0}

        def predictor(n):
            s = requests.Session()
            s.headers.update(http.headers)  # signed in like stack.http
            i = n
            while not stop.is_set():
                photo = photos[i % len(photos)]
                i += args.clients
                t0 = time.perf_counter()
                try:
                    r = s.post(urls["main"] + "/predictSingleImage", files={"file": (f"{i}.jpg", photo)},
                               headers=JSON, timeout=120)
                    ms = (time.perf_counter() - t0) * 1000
                    ok = r.status_code == 200 and "faces" in r.json()
                    # a photo without a detectable face is a correct 422, not a server error
                    ok = ok or (r.status_code == 422 and "No face" in r.json().get("error", ""))
                    with lock:
                        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                        latencies.append(ms)
                        if not ok:
                            errors.append(f"{r.status_code}: {r.text[:200]}")
                except requests.RequestException as exc:
                    with lock:
                        errors.append(repr(exc))

        def trainer():
            while not stop.is_set():
                try:
                    steps = wizard(stack, data)
                    with lock:
                        counters["train_steps"] += steps
                        counters["train_jobs"] += 1
                except Exception as exc:  # noqa: BLE001 - counted as an error
                    with lock:
                        errors.append(f"training: {exc!r}")
                    return

        def watcher():
            while not stop.is_set():
                try:
                    with http.get(f"{urls['video']}/video_feed?video={video}", stream=True, timeout=120) as s:
                        assert s.status_code == 200
                        with lock:
                            counters["video_streams"] += 1
                        for chunk in s.iter_content(65536):
                            with lock:
                                counters["video_frames"] += chunk.count(b"--frame")
                            if stop.is_set():
                                break
                except Exception as exc:  # noqa: BLE001 - counted as an error
                    with lock:
                        errors.append(f"video: {exc!r}")

        threads = [threading.Thread(target=predictor, args=(n,)) for n in range(args.clients)]
        threads += [threading.Thread(target=trainer), threading.Thread(target=watcher)]
        started = time.monotonic()
        for th in threads:
            th.start()
        time.sleep(args.duration)
        stop.set()
        window = time.monotonic() - started
        for th in threads:
            th.join(timeout=600)
        after = stack.memory()
        alive = {n: http.get(u + "/healthz", timeout=10).status_code for n, u in urls.items()}
        crashes = {n: open(work / f"{n}.log", errors="replace").read().count("SIGSEGV")
                   + open(work / f"{n}.log", errors="replace").read().count("SIGABRT") for n in urls}
        result = {
            "clients": args.clients, "servers": SERVERS, "duration_s": round(window, 1), "requests": len(latencies),
            "requests_per_s": round(len(latencies) / args.duration, 2),
            "latency_ms": {q: round(percentile(latencies, q), 1) for q in (50, 95, 99)} if latencies else None,
            "latency_max_ms": round(max(latencies), 1) if latencies else None,
            "statuses": statuses, "errors": len(errors), "error_samples": errors[:5], **counters,
            "memory_mib_before": before, "memory_mib_after": after,
            "memory_growth_mib": {n: round(after[n] - before[n], 1) for n in after},
            "memory_bound_mib": MEMORY_BOUND_MIB, "healthz_after": alive, "worker_crashes": crashes,
            "cpus": os.cpu_count(),
        }
        print(json.dumps(result, indent=1))
        out = ROOT / "bench" / "out"
        out.mkdir(exist_ok=True)
        (out / "load.json").write_text(json.dumps(result, indent=1))
        ok = (not errors and all(v == 200 for v in alive.values()) and not any(crashes.values())
              and all(g <= MEMORY_BOUND_MIB for g in result["memory_growth_mib"].values()))
        print("PASS" if ok else "FAIL: errors, a dead server or memory growth over the bound")
        return 0 if ok else 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
