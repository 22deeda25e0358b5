"""The library's face index at 10^4 to 10^6 faces: usearch (the one kept), faiss-cpu HNSW and exact numpy.

    nice .venv/bin/python bench/bench_index.py                  # 10^4, 10^5, 10^6 faces (minutes, ~3 GB)
    nice .venv/bin/python bench/bench_index.py 10000 100000     # smaller

Embeddings are synthetic, drawn like dlib's (as bench/bench_scale.py: a person is a random
centre with per-coordinate spread 0.06, each face that centre plus spread 0.025, 20 faces a
person: same-person distances ~0.4, different people ~1.0). Queries are 200 new faces of people
in the index. For each size it prints, per method:

- add: faces per second, all faces in one call (both libraries on every core) (usearch: :meth:`shared.library.index.FaceIndex.add`,
  which also saves the file; faiss: ``IndexHNSWFlat.add`` then ``write_index``);
- keep+100: adding 100 faces to the full index from a fresh process's view, as keeping one media
  item does (the writable copy is loaded, changed and saved);
- search: top-20 of one face at a time, mean and p95 over the queries (ms);
- recall@20: share of the exact top-20 (numpy, float64) that the index returns, over the queries;
- load: opening the saved file (usearch: memory-mapped view; faiss: read whole) and answering one search;
- memory: the file's size, and the resident memory a fresh process has after loading and 200 searches.

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
from shared.library.index import CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH

PER_PERSON, K, QUERIES = 20, 20, 200
LOADER = """
import json, resource, sys, time
import numpy as np
kind, path, queries = sys.argv[1], sys.argv[2], np.load(sys.argv[3])
t0 = time.perf_counter()
if kind == "usearch":
    from shared.library.index import FaceIndex
    from pathlib import Path
    index = FaceIndex(Path(path).parent)
    index.search(queries[0], 20)
else:
    import faiss
    index = faiss.read_index(path)
    index.hnsw.efSearch = int(sys.argv[4])
    index.search(queries[:1], 20)
load_s = time.perf_counter() - t0
for q in queries:
    index.search(q, 20) if kind == "usearch" else index.search(q[None], 20)
print(json.dumps({"load_s": load_s, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
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
    out = subprocess.run([sys.executable, "-c", LOADER, kind, str(path), str(query_file), str(EXPANSION_SEARCH)], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def recall(found, truth):
    return float(np.mean([len(set(map(int, f)) & set(map(int, t))) / K for f, t in zip(found, truth)]))


def bench_usearch(data, queries, truth, work, query_file):
    from shared.library.index import FaceIndex

    folder = work / "usearch"
    index = FaceIndex(folder)
    t0 = time.perf_counter()
    index.add(range(len(data)), data)
    add_s = time.perf_counter() - t0
    mean, p95 = timed(lambda q: index.search(q, K), queries)
    found = [[i for i, _ in index.search(q, K)] for q in queries]
    loaded = fresh("usearch", index.path, query_file)
    extra = work / "extra.npy"
    np.save(extra, queries[:100])
    keep = subprocess.run([sys.executable, "-c", KEEPER, str(folder), str(extra), str(len(data))], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return {"add_per_s": len(data) / add_s, "keep100_s": float(keep.stdout), "mean_ms": mean, "p95_ms": p95,
            "recall": recall(found, truth), "file_mb": index.path.stat().st_size / 2 ** 20, **loaded}


def bench_faiss(data, queries, truth, work, query_file):
    import faiss

    index = faiss.IndexHNSWFlat(128, CONNECTIVITY)
    index.hnsw.efConstruction = EXPANSION_ADD
    t0 = time.perf_counter()
    index.add(data)
    path = work / "faiss.index"
    faiss.write_index(index, str(path))
    add_s = time.perf_counter() - t0
    index.hnsw.efSearch = EXPANSION_SEARCH
    mean, p95 = timed(lambda q: index.search(q[None], K), queries)
    found = [index.search(q[None], K)[1][0] for q in queries]
    loaded = fresh("faiss", path, query_file)
    return {"add_per_s": len(data) / add_s, "keep100_s": None, "mean_ms": mean, "p95_ms": p95,
            "recall": recall(found, truth), "file_mb": path.stat().st_size / 2 ** 20, **loaded}


def bench_numpy(data, queries, truth, work):
    norms = np.einsum("ij,ij->i", data, data)
    mean, p95 = timed(lambda q: exact(data, norms, q), queries)
    found = [exact(data, norms, q) for q in queries]
    return {"add_per_s": None, "keep100_s": None, "mean_ms": mean, "p95_ms": p95, "recall": recall(found, truth),
            "file_mb": data.nbytes / 2 ** 20, "load_s": None, "rss_mb": None}


def row(n, name, r):
    def f(v, spec):
        return "-" if v is None else format(v, spec)
    print(f"{n:>9,} {name:<8} add {f(r['add_per_s'], '>9,.0f')}/s  keep+100 {f(r['keep100_s'], '>6.2f')} s  "
          f"search mean {r['mean_ms']:7.2f} ms p95 {r['p95_ms']:7.2f} ms  recall@20 {r['recall']:.3f}  "
          f"load {f(r['load_s'], '>5.2f')} s  file {r['file_mb']:7.1f} MB  rss {f(r['rss_mb'], '>7.0f')} MB",
          flush=True)


def main(sizes):
    rng = np.random.default_rng(24)
    print(f"faces     method   (usearch = shared/library/index.py and faiss IndexHNSWFlat, both M={CONNECTIVITY} "
          f"efConstruction={EXPANSION_ADD} efSearch={EXPANSION_SEARCH}; numpy = exact)")
    for n in sizes:
        data, queries = faces(n, rng)
        d64 = data.astype(np.float64)
        norms64 = np.einsum("ij,ij->i", d64, d64)
        truth = [exact(d64, norms64, q.astype(np.float64)) for q in queries]
        del d64, norms64
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            query_file = work / "queries.npy"
            np.save(query_file, queries)
            row(n, "numpy", bench_numpy(data, queries, truth, work))
            row(n, "usearch", bench_usearch(data, queries, truth, work, query_file))
            row(n, "faiss", bench_faiss(data, queries, truth, work, query_file))


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 100_000, 1_000_000])
