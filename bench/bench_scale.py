"""How the recognition core scales with the roster: 100 to 100,000 KOLs x 20 photos each.

    .venv/bin/python bench/bench_scale.py                 # 100, 1,000, 10,000 KOLs
    .venv/bin/python bench/bench_scale.py 100 1000 10000 100000   # 100,000: ~15 min, 4.5 GB

Embeddings are synthetic, drawn like dlib's (each KOL a random centre with per-coordinate
spread 0.06, each photo that centre plus spread 0.025: same-KOL distances ~0.4, different
KOLs ~1.0). For each roster size it prints:

- train: :func:`shared.recognition.model.train` (centroids + training metrics incl. confused pairs);
- save: :meth:`ModelStore.save` (``.npz``, arrays only) and the file size;
- load: :meth:`ModelStore.load` in a fresh Python process (``load`` alone, and ``cold`` = the
  process's imports of numpy + shared.recognition.store + load), and that process's peak RSS;
- identify: :meth:`Model.predict` of one face (median over 200 faces), after the face is encoded;
- top-5: :meth:`Model.similar` with ``k=5`` (median over 200 faces);
- retrain: :func:`shared.recognition.model.train` again after adding one KOL (what an import costs).

Bounds from issue 10 (2-core machine): 1,000 KOLs trained <= 30 s, 10,000 <= 300 s; load <= 1 s at
10,000; identify <= 5 ms per face and top-5 <= 20 ms at 10,000.
"""
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT
from shared.recognition.model import train
from shared.recognition.store import ModelStore

PER_KOL = 20
LOADER = """
import json, resource, sys, time
t0 = time.perf_counter()
import numpy as np
from shared.recognition.store import ModelStore
t1 = time.perf_counter()
m = ModelStore(sys.argv[1]).load(sys.argv[2])
t2 = time.perf_counter()
print(json.dumps({"load": t2 - t1, "cold": t2 - t0, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "kols": len(m.classes)}))
"""


def synthetic(kols, per_kol=PER_KOL, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 0.06, size=(kols, 128)).astype(np.float32)
    X = np.repeat(centres, per_kol, axis=0)
    X += rng.normal(0, 0.025, size=X.shape).astype(np.float32)
    slugs = [f"kol-{i:06d}" for i in range(kols) for _ in range(per_kol)]
    return X, slugs, centres


def median_ms(fn, items):
    times = []
    for item in items:
        t = time.perf_counter()
        fn(item)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def one(kols, folder):
    X, slugs, centres = synthetic(kols)
    names = {s: s for s in set(slugs)}
    t = time.perf_counter()
    model = train(X, slugs, names)
    train_s = time.perf_counter() - t
    store = ModelStore(Path(folder) / f"models-{kols}")
    t = time.perf_counter()
    version = store.save(model)
    save_s = time.perf_counter() - t
    size_mb = (store.root / version / "model.npz").stat().st_size / 2 ** 20
    out = subprocess.run([sys.executable, "-c", LOADER, str(store.root), version], cwd=ROOT,
                         capture_output=True, text=True, check=True)
    fresh = json.loads(out.stdout)
    assert fresh["kols"] == kols
    rng = np.random.default_rng(1)
    who = rng.integers(0, kols, 200)
    probes = centres[who] + rng.normal(0, 0.025, size=(200, 128)).astype(np.float32)
    right = sum(p.slug == f"kol-{w:06d}" for w, p in
                zip(who, (model.predict(e[None, :])[0] for e in probes)))
    identify = median_ms(lambda e: model.predict(e[None, :]), probes)
    top5 = median_ms(lambda e: model.similar(e, 5), probes)
    t = time.perf_counter()
    train(np.concatenate([X, np.repeat(centres[:1] + 0.3, PER_KOL, 0)]),
                     slugs + ["new-kol"] * PER_KOL, names)
    retrain_s = time.perf_counter() - t
    return {"kols": kols, "train_s": train_s, "save_s": save_s, "size_mb": size_mb, "load_s": fresh["load"],
            "cold_s": fresh["cold"], "rss_mb": fresh["rss_mb"], "identify_ms": identify, "top5_ms": top5,
            "retrain_s": retrain_s, "right": right / 200}


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [100, 1000, 10000]
    print(f"{'KOLs':>8s} {'photos':>9s} {'train s':>8s} {'save s':>7s} {'file MB':>8s} {'load s':>7s} "
          f"{'cold s':>7s} {'RSS MB':>7s} {'identify ms':>12s} {'top-5 ms':>9s} {'+1 KOL s':>9s} {'named right':>12s}")
    with tempfile.TemporaryDirectory() as folder:
        for kols in sizes:
            r = one(kols, folder)
            print(f"{kols:8d} {kols * PER_KOL:9d} {r['train_s']:8.2f} {r['save_s']:7.2f} {r['size_mb']:8.1f} "
                  f"{r['load_s']:7.3f} {r['cold_s']:7.3f} {r['rss_mb']:7.0f} {r['identify_ms']:12.2f} "
                  f"{r['top5_ms']:9.2f} {r['retrain_s']:9.2f} {100 * r['right']:11.1f}%", flush=True)


if __name__ == "__main__":
    main()
