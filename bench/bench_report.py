"""What the training report promises: accuracy by photos per KOL, measured on lfw_dev and asian_dev.

    nice .venv/bin/python bench/bench_report.py        # ~2 min once the embeddings are cached

The table it prints is :data:`shared.recognition.report.BY_PHOTOS` (copy it there when the rule changes).

Protocol, per population: the people with at least 11 photos are the KOLs (lfw_dev: 44 people, asian_dev:
14); each is enrolled with 1, 3, 5 or 10 of their photos drawn at random and their other photos are
the KOL tests; everyone else (lfw_dev: the people with fewer photos, asian_dev: its 15 strangers and
the KOLs with fewer than 11 photos) is a stranger whose photos must be answered "unknown". Five draws
per photo count. Each test photo is one :meth:`Model.predict` call (one face per photo).

Nothing is fitted on the people measured: asian_dev uses the shipped rule
(:data:`shared.recognition.rule.RULE`, fitted on lfw_dev only); lfw_dev is split into two folds by
person, and each fold is measured with the rule fitted (``fit_rule`` on ``bench_accuracy.dev_data``,
the shipped odds) on the other fold.

Per photo count it prints: KOL photos named right, strangers answered "unknown", answers shown as sure
(confidence >= :data:`shared.recognition.report.SURE`) among all answers, and how many of those were right.
"""
import hashlib
import multiprocessing

import numpy as np

import lfw_cache
from bench_accuracy import dev_data, folds, scenario
from common import SHARED_DATA
from shared.recognition.model import train
from shared.recognition.report import SURE
from shared.recognition.rule import KOL_ODDS, RULE, fit_rule

SHOTS = (1, 3, 5, 10)
DRAWS = 5
MIN_KOL_PHOTOS = 11
ASIAN = SHARED_DATA / "faces" / "asian_dev"
EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def folder_faces(folder):
    """``{person: [subject embedding]}`` of every photo under ``folder/<person>/`` (photos without a face
    left out), embedded once into lfw_cache's cache (same keys, same engine path)."""
    files = [(p.name, f) for p in sorted(x for x in folder.iterdir() if x.is_dir())
             for f in sorted(p.iterdir()) if f.suffix.lower() in EXTENSIONS]
    key = {f: hashlib.sha1(f.read_bytes()).hexdigest() for _, f in files}
    todo = [str(f) for _, f in files if not (lfw_cache.CACHE / f"{key[f]}.npz").exists()]
    if todo:
        lfw_cache.CACHE.mkdir(parents=True, exist_ok=True)
        with multiprocessing.get_context("spawn").Pool(2) as pool:
            list(pool.imap_unordered(lfw_cache._compute, todo, chunksize=4))
    faces = {}
    for person, f in files:
        with np.load(lfw_cache.CACHE / f"{key[f]}.npz", allow_pickle=False) as z:
            e = lfw_cache.subject((z["boxes"], z["embeddings"], z["shape"]))
        faces.setdefault(person, [])
        if e is not None:
            faces[person].append(e)
    return faces


def measure(faces, people, rule, tally, seed):
    """Add one population-part's answers to ``tally[shots]`` (counts, see :func:`main`)."""
    kols = {p for p in people if len(faces[p]) >= MIN_KOL_PHOTOS}
    for shots in SHOTS:
        for draw in range(DRAWS):
            X, slugs, tests = scenario(faces, kols, people, shots, seed=seed + 100 * shots + draw)
            model = train(X, slugs, {}, rule=rule)
            t = tally.setdefault(shots, np.zeros(6, dtype=np.int64))
            for e, person, is_kol in tests:
                p = model.predict(e[None, :])[0]
                right = p.slug == person if is_kol else p.slug is None
                t += [is_kol, is_kol and right, not is_kol, (not is_kol) and right, p.confidence >= SURE,
                      p.confidence >= SURE and right]


def main():
    lfw = {person: [] for person, *_ in lfw_cache.load()}
    for person, _name, emb, _n in lfw_cache.load():
        if emb is not None:
            lfw[person].append(emb)
    asian = folder_faces(ASIAN)
    table = {}
    a, b = folds(lfw, seed=0)
    tally = {}
    for fit, test in ((a, b), (b, a)):
        measure(lfw, test, fit_rule(*dev_data(lfw, fit), odds=KOL_ODDS), tally, seed=0)
    table["lfw_dev"] = tally
    tally = {}
    measure(asian, sorted(asian), {k: list(v) for k, v in RULE.items()}, tally, seed=0)
    table["asian_dev"] = tally
    print(f"KOLs: people with >= {MIN_KOL_PHOTOS} photos; {DRAWS} draws per photo count; sure = confidence >= {SURE}")
    out = {}
    for population, tally in table.items():
        out[population] = {}
        print(f"\n{population}")
        for shots, (kol, named, strangers, unknown, sure, sure_right) in sorted(tally.items()):
            row = {"named_right": round(float(named / kol), 3), "strangers_unknown": round(float(unknown / strangers), 3),
                   "sure": round(float(sure / (kol + strangers)), 3), "sure_right": round(float(sure_right / max(sure, 1)), 3)}
            out[population][shots] = row
            print(f"  {shots:2d} photos: KOL photos named right {named:5d}/{kol:<5d} {100 * row['named_right']:5.1f} %   "
                  f"strangers unknown {unknown:5d}/{strangers:<5d} {100 * row['strangers_unknown']:5.1f} %   "
                  f"sure {100 * row['sure']:5.1f} % of answers, of them right {100 * row['sure_right']:5.1f} %")
    print("\nBY_PHOTOS =", out)


if __name__ == "__main__":
    main()
