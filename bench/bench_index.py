"""The library's face index at 10^4 to 10^6 faces: faiss IVF (the one kept), usearch HNSW and exact numpy.

    nice .venv/bin/python bench/bench_index.py                  # 10^4, 10^5, 10^6 faces (minutes, ~3 GB)
    nice .venv/bin/python bench/bench_index.py 10000 100000     # smaller
    nice .venv/bin/python bench/bench_index.py --real 100000    # real dev-set faces padded to 10^5

Embeddings are synthetic, drawn like dlib's (as bench/bench_scale.py: a person is a random
centre with per-coordinate spread 0.06, each face that centre plus spread 0.025, 20 faces a
person: same-person distances ~0.4, different people ~1.0). Queries are 200 new faces of people
in the index. With ``--real``, the index holds every lfw_dev and asian_dev face of the embedding
cache (bench/lfw_cache.py; it must be filled) but 200 of them, which are the queries, padded to
size with synthetic people drawn around the real faces' mean and per-coordinate spread.
For each size it prints, per method:

- add: faces per second, all faces in one call (faiss IVF: :meth:`shared.library.index.FaceIndex.add`,
  which also builds the lists (k-means) and saves the file; usearch: the plain ``Index.add`` on both
  cores then ``save``, as the library did before);
- keep+100: adding 100 faces to the full index from a fresh process's view, as keeping one media
  item does (the writable copy is read, changed and saved);
- search: top-20 of one face at a time, mean and p95 over the queries (ms; numpy over the first 50);
- recall@20: share of the exact top-20 (numpy, float64) that the index returns, over the queries;
- load: opening the saved file in a fresh process (both memory-mapped) and answering one search;
- memory: the file's size, and the resident memory of a fresh process after loading and 200
  searches: its own (``RssAnon``) and the file's pages it maps (``RssFile``: the page cache's copy,
  shared by every process that maps the file; the modules' code is in it too). A peak
  (``ru_maxrss``) would count the benchmark's own memory, which Linux carries across ``exec``.

Bounds (issue 24, this 2-core machine): 10^6 faces searched in <= 50 ms, added at >= 2,000 faces/s,
loaded in <= 2 s.
"""
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT

PER_PERSON, K, QUERIES = 20, 20, 200
#: The HNSW graph the library used before (M, efConstruction, ef), measured beside it.
HNSW = 12, 48, 512
LOADER = """
import json, sys, time
import numpy as np
kind, path, queries = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
t0 = time.perf_counter()
if kind == "faiss":
    from shared.library.index import FaceIndex
    from pathlib import Path
    index = FaceIndex(Path(path).parent)
    search = lambda q: index.search(q, 20)
else:
    from usearch.index import Index
    index = Index.restore(path, view=True)
    index.expansion_search = int(sys.argv[4])
    search = lambda q: index.search(q, 20)
search(queries[0])
load_s = time.perf_counter() - t0
for q in queries:
    search(q)
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({"load_s": load_s, "anon_mb": int(status["RssAnon"].split()[0]) / 1024,
                  "file_rss_mb": int(status["RssFile"].split()[0]) / 1024}))
"""
KEEPER = """
import sys, time
import numpy as np
from pathlib import Path
from shared.library.index import FaceIndex
index = FaceIndex(Path(sys.argv[1]))
index.search(np.zeros(128), 1)
new = np.load(sys.argv[2])
t0 = time.perf_counter()
index.add(range(int(sys.argv[3]), int(sys.argv[3]) + len(new)), new)
print(time.perf_counter() - t0)
"""


def faces(n, rng):
    """``n`` synthetic embeddings (float32) of ``n / 20`` people, and 200 queries (new faces of them)."""
    people = max(1, n // PER_PERSON)
    centres = rng.normal(0, 0.06, (people, 128)).astype(np.float32)
    who = np.arange(n) % people
    data = centres[who] + rng.normal(0, 0.025, (n, 128)).astype(np.float32)
    queries = centres[rng.integers(0, people, QUERIES)] + rng.normal(0, 0.025, (QUERIES, 128)).astype(np.float32)
    return data, queries


def real_faces(n, rng):
    """Every cached lfw_dev and asian_dev face but 200 (the queries), then synthetic people (20
    faces each, spread 0.025) around centres drawn with the real faces' mean and per-coordinate
    spread, up to ``n`` faces (float32)."""
    import lfw_cache

    real = np.array([e for name in lfw_cache.SETS for person in lfw_cache.faces(name).values() for e in person],
                    dtype=np.float32)
    rng.shuffle(real)
    queries, real = real[:QUERIES], real[QUERIES:]
    people = max(0, n - len(real)) // PER_PERSON + 1
    centres = rng.normal(real.mean(axis=0), real.std(axis=0), (people, 128)).astype(np.float32)
    pad = centres[np.arange(n - len(real)) % people] + rng.normal(0, 0.025, (n - len(real), 128)).astype(np.float32)
    data = np.concatenate([real, pad])
    return data[rng.permutation(len(data))], queries


def exact(data, norms, q, k=K):
    """Exact top-k (squared distances through one matrix product), nearest first."""
    d = norms - 2.0 * (data @ q) + float(q @ q)
    top = np.argpartition(d, k)[:k]
    return top[np.argsort(d[top])]


def timed(fn, queries):
    """Mean and p95 milliseconds of ``fn(q)`` over the queries (after two warm-up calls)."""
    fn(queries[0]), fn(queries[1])
    times = []
    for q in queries:
        t0 = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.mean(times)), float(np.percentile(times, 95))


def fresh(kind, path, query_file):
    out = subprocess.run([sys.executable, "-c", LOADER, kind, str(path), str(query_file), str(HNSW[2])], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def recall(found, truth):
    return float(np.mean([len(set(map(int, f)) & set(map(int, t))) / K for f, t in zip(found, truth)]))


def bench_faiss(data, queries, truth, work, query_file):
    from shared.library.index import FaceIndex

    folder = work / "faiss"
    index = FaceIndex(folder)
    index.search(queries[0], K)  # empty: imports faiss before the clock starts, as usearch is
    t0 = time.perf_counter()
    index.add(range(1, len(data) + 1), data)  # face ids start at 1
    add_s = time.perf_counter() - t0
    mean, p95 = timed(lambda q: index.search(q, K), queries)
    found = [[i - 1 for i, _ in index.search(q, K)] for q in queries]
    loaded = fresh("faiss", index.path, query_file)
    extra = work / "extra.npy"
    np.save(extra, queries[:100])
    keep = subprocess.run([sys.executable, "-c", KEEPER, str(folder), str(extra), str(len(data) + 1)], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return {"name": f"faiss IVF{index.lists}", "add_per_s": len(data) / add_s, "keep100_s": float(keep.stdout),
            "mean_ms": mean, "p95_ms": p95, "recall": recall(found, truth),
            "file_mb": index.path.stat().st_size / 2 ** 20, **loaded}


def bench_usearch(data, queries, truth, work, query_file):
    from usearch.index import Index

    m, ef_add, ef = HNSW
    index = Index(ndim=128, metric="l2sq", dtype="f32", connectivity=m, expansion_add=ef_add, expansion_search=ef)
    path = work / "faces.usearch"
    t0 = time.perf_counter()
    index.add(np.arange(len(data), dtype=np.uint64), data, threads=2)
    index.save(str(path))
    add_s = time.perf_counter() - t0
    mean, p95 = timed(lambda q: index.search(q, K), queries)
    found = [index.search(q, K).keys for q in queries]
    loaded = fresh("usearch", path, query_file)
    return {"name": "usearch", "add_per_s": len(data) / add_s, "keep100_s": None, "mean_ms": mean, "p95_ms": p95,
            "recall": recall(found, truth), "file_mb": path.stat().st_size / 2 ** 20, **loaded}


def bench_numpy(data, queries, truth, work):
    norms = np.einsum("ij,ij->i", data, data)
    mean, p95 = timed(lambda q: exact(data, norms, q), queries[:50])
    found = [exact(data, norms, q) for q in queries]
    return {"name": "numpy", "add_per_s": None, "keep100_s": None, "mean_ms": mean, "p95_ms": p95,
            "recall": recall(found, truth), "file_mb": data.nbytes / 2 ** 20, "load_s": None, "anon_mb": None,
            "file_rss_mb": None}


def row(n, r):
    def f(v, spec):
        return "-" if v is None else format(v, spec)
    print(f"{n:>9,} {r['name']:<12} add {f(r['add_per_s'], '>9,.0f')}/s  keep+100 {f(r['keep100_s'], '>6.2f')} s  "
          f"search mean {r['mean_ms']:7.2f} ms p95 {r['p95_ms']:7.2f} ms  recall@20 {r['recall']:.4f}  "
          f"load {f(r['load_s'], '>5.2f')} s  file {r['file_mb']:7.1f} MB  "
          f"rss own {f(r['anon_mb'], '>5.0f')} MB + mapped {f(r['file_rss_mb'], '>5.0f')} MB",
          flush=True)


def main(sizes, real=False):
    from shared.library.index import FACES_PER_LIST, NPROBE

    rng = np.random.default_rng(24)
    print(f"faces     method       (faiss IVF = shared/library/index.py, {FACES_PER_LIST}+ faces a list, {NPROBE} "
          f"lists searched; usearch M={HNSW[0]} efConstruction={HNSW[1]} ef={HNSW[2]}; numpy = exact; "
          f"{'real dev-set faces padded' if real else 'synthetic'}) load {open('/proc/loadavg').read().split()[:3]}")
    for n in sizes:
        data, queries = (real_faces if real else faces)(n, rng)
        d64 = data.astype(np.float64)
        norms64 = np.einsum("ij,ij->i", d64, d64)
        truth = [exact(d64, norms64, q.astype(np.float64)) for q in queries]
        del d64, norms64
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            query_file = work / "queries.npy"
            np.save(query_file, queries)
            row(n, bench_numpy(data, queries, truth, work))
            row(n, bench_faiss(data, queries, truth, work, query_file))
            row(n, bench_usearch(data, queries, truth, work, query_file))
    print(f"load average after: {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    args = sys.argv[1:]
    main([int(a) for a in args if a != "--real"] or [10_000, 100_000, 1_000_000], real="--real" in args)
