"""The import's duplicate check ("the same person as a KOL already in the pool?") on real faces.

    nice .venv/bin/python bench/bench_duplicates.py

Pools: the five_celebs KOLs with 6 one-face photos each (faces from ``bench_cleaning``'s align cache),
and asian_dev's 20 KOLs with 5 photos each (``lfw_cache``'s embeddings). New KOLs, each checked
alone against the pool: lfw_dev people who are not in five_celebs (their first 1 or 3 photos) and
asian_dev's 15 strangers (1 photo, all photos) must not be asked about; lfw_dev's photos of the
five_celebs people, and asian_dev KOLs' other photos (1, 3), are real duplicates and should be.

Beside :func:`shared.training.roster.matching_kols` (the model's calibrated answer), the rule it
replaced: a pool KOL matches when it holds the nearest pool photo of at least half of the new faces,
at a median distance under 0.6 (dlib's same-person distance).
"""
import numpy as np

import lfw_cache
from bench_cleaning import aligned
from shared.faces import engine
from shared.training import roster

SAME = {"Ben_Affleck": "ben_afflek", "Madonna": "madonna", "Elton_John": "elton_john",
        "Jerry_Seinfeld": "jerry_seinfeld", "Mindy_Kaling": "mindy_kaling"}


def nearest_photo_rule(X, pool_X, pool_slugs, share=0.5, distance=engine.SAME_PERSON_DISTANCE):
    """The previous check: the pool KOLs holding the nearest pool photo of >= ``share`` of the faces ``X``,
    at a median distance under ``distance``."""
    d = np.linalg.norm(np.asarray(X)[:, None, :] - np.asarray(pool_X)[None, :, :], axis=2)
    nearest = np.asarray(pool_slugs)[d.argmin(1)]
    best = d.min(1)
    return [s for s in set(nearest.tolist()) if (nearest == s).mean() >= share and np.median(best[nearest == s]) < distance]


def run(label, pool, cases):
    """Print, per kind of new KOL, how many of them each rule asks about."""
    X = np.array([e for es in pool.values() for e in es])
    S = [p for p, es in pool.items() for _ in es]
    model = roster.pool_model(X, S)
    for kind, news in cases.items():
        old = sum(bool(nearest_photo_rule(np.array(es), X, S)) for es in news)
        new = sum(bool(roster.matching_kols(np.array(es), model)) for es in news)
        print(f"  {label:28s} {kind:38s} {len(news):4d} new KOLs: asked, nearest-photo rule {old:4d}, model's answer {new:4d}")


def main():
    lfw = lfw_cache.faces("lfw_dev")
    five = {kol["name"]: [s["crops"][0]["embedding"] for s in kol["sources"] if len(s["crops"]) == 1][:6]
            for kol in aligned("five_celebs")["kols"]}
    others = [p for p in lfw if p not in SAME]
    run("pool five_celebs, 6 photos", five, {
        "lfw_dev stranger, 1 photo": [lfw[p][:1] for p in others],
        "lfw_dev stranger, 3 photos": [lfw[p][:3] for p in others if len(lfw[p]) >= 3],
        "same person (lfw_dev), 1 photo": [lfw[p][:1] for p in SAME if p in lfw],
        "same person (lfw_dev), 3 photos": [lfw[p][:3] for p in SAME if len(lfw.get(p, ())) >= 3]})
    asian = lfw_cache.faces("asian_dev")
    kols = [p for p in asian if len(asian[p]) >= 8]
    strangers = [p for p in asian if len(asian[p]) < 8]
    run("pool asian_dev, 5 photos", {p: asian[p][:5] for p in kols}, {
        "asian_dev stranger, 1 photo": [asian[p][:1] for p in strangers],
        "asian_dev stranger, all photos": [asian[p] for p in strangers],
        "same person, 1 other photo": [asian[p][5:6] for p in kols],
        "same person, 3 other photos": [asian[p][5:8] for p in kols]})


if __name__ == "__main__":
    main()
