"""How the KOL model scales with the roster: 100 to 100,000 KOLs x 20 photos each, stored the old way
(one ``model.npz``, read whole) and the new way (one ``.npy`` per array, memory-mapped), and +1 KOL by a
full training and by :func:`shared.recognition.model.add_kol`, in the same run.

    .venv/bin/python bench/bench_scale.py                 # 100, 1,000, 10,000 KOLs
    .venv/bin/python bench/bench_scale.py 10000 100000    # 100,000: ~25 min at load average 8, ~4 GB at its peak

Embeddings are synthetic, drawn like dlib's (each KOL a random centre with per-coordinate
spread 0.06, each photo that centre plus spread 0.025: same-KOL distances ~0.4, different
KOLs ~1.0). The model is built without :func:`shared.recognition.model.train` (its per-KOL SVMs take
hours at 100,000 KOLs): centroids and each KOL's nearest KOL as ``train`` computes them, each KOL's SVM
negatives and reach by :func:`shared.recognition.model.svm_negatives` (exact, as ``train`` finds them) up to
``--exact`` KOLs (default 10,000); above that, among the photos of its 64 nearest KOLs and the background
only (a reach at least as far as the exact one, so +1 KOL refits at least as many SVMs as it would);
SVM weights random (loading does not depend on their values), except those of the KOLs whose negatives the
new KOL's photos reach, fitted as ``train`` fits them on those negatives (what :func:`add_kol` looks at). For
each roster size it prints:

- file: the version on disk (old ``model.npz`` / new ``.npy`` files, the new one keeps more arrays);
- load: :meth:`ModelStore.load` in a fresh Python process, old / new (then one prediction);
- RSS / PSS of that process and of a second one that loads the same version while the first still
  holds it (``/proc/<pid>/smaps_rollup``), old and new;
- identify: :meth:`Model.predict` of one face (median over 200 faces), on the mapped model;
- +1 full: a full training of the roster plus one KOL: measured (``train``) up to ``--full`` KOLs (default
  1,000), above that estimated as K times the measured per-KOL cost of ``fit_svms``'s loop and of
  ``svm_negatives`` (16 KOLs each, on all rows) plus the measured all-pairs nearest-KOL pass;
- +1 incr.: wall seconds (and the process's CPU seconds, what it costs on an idle machine) of :func:`add_kol` of one new KOL drawn like the others (20 photos) and saving it as a new
  version (mapped); ``SVMs fitted/reached``: how many SVMs it fitted again, of the KOLs whose negatives the new
  photos entered (the others' new negatives all lie outside their margins).
"""
import argparse
import importlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import ROOT
from shared.recognition import rule
from shared.recognition.model import Model, _padded, _rows, add_kol, background_id, svm_negatives, train
from shared.recognition.report import nearest_kols
from shared.recognition.store import ModelStore

PER_KOL = 20
#: Above ``--exact`` KOLs, a KOL's SVM negatives are looked for among the photos of this many nearest KOLs.
NEAR_KOLS = 64
HOLDER = """
import json, sys, time
t0 = time.perf_counter()
import numpy as np
from shared.recognition.store import ModelStore
t1 = time.perf_counter()
m = ModelStore(sys.argv[1]).load(sys.argv[2])
t2 = time.perf_counter()
m.predict(np.asarray(m.centroids[:1], dtype=np.float32))
roll = {}
for line in open("/proc/self/smaps_rollup"):
    parts = line.split()
    if len(parts) == 3 and parts[2] == "kB":
        roll[parts[0].rstrip(":")] = int(parts[1]) / 1024
print(json.dumps({"load": t2 - t1, "cold": t2 - t0, "kols": len(m.classes), "rss": roll["Rss"], "pss": roll["Pss"],
                  "private": roll["Private_Clean"] + roll["Private_Dirty"]}), flush=True)
sys.stdin.read()
"""


def synthetic(kols, per_kol=PER_KOL, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 0.06, size=(kols, 128)).astype(np.float32)
    X = np.repeat(centres, per_kol, axis=0)
    X += rng.normal(0, 0.025, size=X.shape).astype(np.float32)
    slugs = [f"kol-{i:06d}" for i in range(kols)]
    return X, slugs, centres


def median_ms(fn, items):
    times = []
    for item in items:
        t = time.perf_counter()
        fn(item)
        times.append((time.perf_counter() - t) * 1000)
    return float(np.median(times))


def near_negatives(model, bg):
    """Each KOL's SVM negatives among the photos of its :data:`NEAR_KOLS` nearest KOLs and ``bg``: ``(negs, reach)``."""
    K, N = len(model.classes), len(model.X)
    negs, reach = np.full((K, rule.SVM_NEGATIVES), -1, dtype=np.int32), np.zeros(K, dtype=np.float32)
    for start in range(0, K, 1024):
        D = model.sq_distances(model.centroids[start:start + 1024])
        near = np.argpartition(D, NEAR_KOLS, axis=1)[:, :NEAR_KOLS + 1]
        for i, ks in enumerate(near):
            k = start + i
            ks = ks[ks != k]
            cand = np.concatenate([(model.offsets[ks][:, None] + np.arange(PER_KOL)).ravel(), N + np.arange(len(bg))])
            data = _rows(model.X, bg, cand).astype(np.float64)
            c = model.centroids[k].astype(np.float64)
            d = (data * data).sum(1) - 2.0 * data @ c
            order = np.argpartition(d, rule.SVM_NEGATIVES - 1)[:rule.SVM_NEGATIVES]
            order = order[np.argsort(d[order])]
            negs[k], reach[k] = cand[order], d[order[-1]] + c @ c
    return negs, reach


def build(kols, exact):
    """The synthetic model of ``kols`` KOLs (see the module docstring) and the seconds its parts took."""
    X, slugs, centres = synthetic(kols)
    bg = rule.background()
    model = Model(X=X, offsets=np.arange(kols + 1) * PER_KOL, classes=slugs, chips=[f"c{i}" for i in range(len(X))],
                  names={s: s for s in slugs})
    model.shrink = rule.roster_shrink(model.X, model.offsets)
    rng = np.random.default_rng(2)
    model.svm_w = rng.normal(0, 0.3, (kols, 128)).astype(np.float32)
    model.svm_b = rng.normal(0, 0.3, kols).astype(np.float32)
    t = time.perf_counter()
    model.kol_nearest, model.kol_nearest_d = nearest_kols(model)
    nearest_s = time.perf_counter() - t
    if kols <= exact:
        rows, reach = svm_negatives(model.X, model.offsets, bg, np.arange(kols))
        model.svm_negs, model.svm_reach = _padded(rows), reach.astype(np.float32)
    else:
        model.svm_negs, model.svm_reach = near_negatives(model, bg)
    model.meta = {"identities": kols, "samples": int(len(X)), "metrics": {"roster": {"background_id": background_id(bg)}}}
    return model, centres, nearest_s


def new_kol(seed=1):
    """The photos of one more KOL, drawn like the others: ``(PER_KOL, 128)``."""
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.06, 128).astype(np.float32) + rng.normal(0, 0.025, (PER_KOL, 128)).astype(np.float32)


def fit_reached(model, rows, bg):
    """Fit, as ``train`` does, the SVM of every KOL whose reach ``rows`` (the new KOL's photos) enter: the
    ones :func:`add_kol` looks at (each on exactly its stored negatives). Returns how many."""
    C = model.centroids.astype(np.float64)
    d = np.maximum((C * C).sum(1)[:, None] + (rows.astype(np.float64) ** 2).sum(1)[None, :] - 2.0 * C @ rows.T.astype(np.float64), 0)
    ks = np.flatnonzero(d.min(1) <= model.svm_reach * 1.001)
    for k in ks:
        own = model.X[model.offsets[k]:model.offsets[k + 1]]
        w, b = rule.fit_svms(own, [0, len(own)], _rows(model.X, bg, model.svm_negs[k][model.svm_negs[k] >= 0]))
        model.svm_w[k], model.svm_b[k] = w[0], b[0]
    return len(ks)


def per_kol_svm_seconds(model, bg, n=16):
    """Measured seconds per KOL, on this model's rows: ``fit_svms``'s loop body (its distances, argsort and
    LinearSVC) and :func:`svm_negatives` (``n`` KOLs each)."""
    from sklearn.svm import LinearSVC

    data = np.vstack([model.X, bg]).astype(np.float64)
    sq = (data * data).sum(1)
    t = time.perf_counter()
    for k in range(n):
        lo, hi = model.offsets[k], model.offsets[k + 1]
        d = sq - 2.0 * data @ model.centroids[k].astype(np.float64)
        d[lo:hi] = np.inf
        hard = np.argsort(d)[:rule.SVM_NEGATIVES]
        rows = np.concatenate([np.arange(lo, hi), hard])
        LinearSVC(C=rule.SVM_C, class_weight="balanced", dual=False).fit(data[rows], np.arange(len(rows)) < hi - lo)
    fit_s = (time.perf_counter() - t) / n
    t = time.perf_counter()
    svm_negatives(model.X, model.offsets, bg, np.arange(n))
    return fit_s, (time.perf_counter() - t) / n


def save_old(store, model):
    """``model`` saved as versions were saved before issue 24: one uncompressed ``model.npz``. Returns the version."""
    version = "20260101-000000-000001"
    folder = store.root / version
    folder.mkdir(parents=True)
    np.savez(folder / "model.npz", X=model.X, offsets=model.offsets, centroids=model.centroids,
             classes=np.array(model.classes, dtype=str), chips=np.array(model.chips, dtype=str),
             rule_right=np.array(model.rule["right"]), rule_stranger=np.array(model.rule["stranger"]),
             shrink=np.array(model.shrink), svm_w=model.svm_w, svm_b=model.svm_b)
    (folder / "meta.json").write_text(json.dumps({"names": model.names}))
    return version


def two_processes(root, version):
    """Load ``version`` in one fresh process, then in a second while the first holds it: their reports."""
    first = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), version], cwd=ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    a = json.loads(first.stdout.readline())
    second = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), version], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    b = json.loads(second.stdout.readline())
    for p in (first, second):
        p.stdin.close()
        p.wait()
    return a, b


def folder_mb(path):
    return sum(p.stat().st_size for p in Path(path).iterdir()) / 2 ** 20


def one(kols, folder, exact, full_upto):
    model, centres, nearest_s = build(kols, exact)
    bg = rule.background()
    reached = fit_reached(model, new_kol(), bg)
    old_store, new_store = ModelStore(Path(folder) / f"old-{kols}"), ModelStore(Path(folder) / f"new-{kols}")
    old_version = save_old(old_store, model)
    t = time.perf_counter()
    new_version = new_store.save(model)
    save_s = time.perf_counter() - t
    old_a, old_b = two_processes(old_store.root, old_version)
    new_a, new_b = two_processes(new_store.root, new_version)
    assert old_a["kols"] == new_a["kols"] == kols
    mapped = new_store.load(new_version)
    rng = np.random.default_rng(1)
    who = rng.integers(0, kols, 200)
    probes = centres[who] + rng.normal(0, 0.025, size=(200, 128)).astype(np.float32)
    identify = median_ms(lambda e: mapped.predict(e[None, :]), probes)
    extra = new_kol()
    t, cpu = time.perf_counter(), time.process_time()
    added = add_kol(mapped, "kol-new", extra, [f"n{i}" for i in range(PER_KOL)])
    add_s = time.perf_counter() - t
    t = time.perf_counter()
    new_store.save(added)
    add_save_s, add_cpu_s = time.perf_counter() - t, time.process_time() - cpu
    if kols <= full_upto:
        X = np.concatenate([model.X, extra])
        slugs = [s for s in model.classes for _ in range(PER_KOL)] + ["kol-new"] * PER_KOL
        t = time.perf_counter()
        train(X, slugs, {})
        full_s, full_how = time.perf_counter() - t, "measured"
    else:
        fit_s, negatives_s = per_kol_svm_seconds(model, bg)
        full_s, full_how = (kols + 1) * (fit_s + negatives_s) + nearest_s, "estimated"
    return {"kols": kols, "old_mb": folder_mb(old_store.root / old_version), "new_mb": folder_mb(new_store.root / new_version),
            "save_s": save_s, "old": [old_a, old_b], "new": [new_a, new_b], "identify_ms": identify,
            "full_s": full_s, "full_how": full_how, "add_s": add_s, "add_save_s": add_save_s, "add_cpu_s": add_cpu_s,
            "svms": added.meta["metrics"]["added"]["svms"], "reached": reached, "exact": kols <= exact}


def main():
    importlib.import_module("sklearn.svm")  # imported before any timing (a second or more)

    rule.background()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[100, 1000, 10000])
    parser.add_argument("--exact", type=int, default=10000, help="exact SVM negatives up to this many KOLs")
    parser.add_argument("--full", type=int, default=1000, help="measure the full training up to this many KOLs")
    args = parser.parse_args()
    print(f"{'KOLs':>8s} {'file MB old/new':>16s} {'load s old/new':>15s} {'RSS MB 1st/2nd old':>19s} "
          f"{'new':>10s} {'PSS MB 2nd old/new':>19s} {'private 2nd old/new':>20s} {'identify ms':>11s} "
          f"{'+1 full s':>14s} {'+1 incr. s (add+save), CPU s':>30s} {'SVMs fitted/reached':>19s}")
    with tempfile.TemporaryDirectory() as folder:
        for kols in args.sizes:
            r = one(kols, folder, args.exact, args.full)
            (oa, ob), (na, nb) = r["old"], r["new"]
            print(f"{kols:8d} {r['old_mb']:7.1f}/{r['new_mb']:<8.1f} {oa['load']:7.3f}/{na['load']:<7.3f} "
                  f"{oa['rss']:9.0f}/{ob['rss']:<9.0f} {na['rss']:4.0f}/{nb['rss']:<5.0f} "
                  f"{ob['pss']:9.0f}/{nb['pss']:<9.0f} {ob['private']:9.0f}/{nb['private']:<10.0f} "
                  f"{r['identify_ms']:11.2f} {r['full_s']:8.1f} {r['full_how'][:4]:5s} "
                  f"{r['add_s'] + r['add_save_s']:7.2f} ({r['add_s']:.2f}+{r['add_save_s']:.2f}) cpu {r['add_cpu_s']:5.2f} "
                  f"{r['svms']:5d}/{r['reached']:<5d}"
                  f"{'' if r['exact'] else '  (negatives among the 64 nearest KOLs)'}", flush=True)


if __name__ == "__main__":
    main()
