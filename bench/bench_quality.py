"""Enrolment photos weighted by quality (issue 23, item 3): does a KOL's centroid weighted by the size, sharpness
and pose of its photos name more of its other photos, and keep strangers out?

    nice .venv/bin/python bench/bench_quality.py              # 3 splits, 5 photos per KOL (~10 min on 2 cores)
    nice .venv/bin/python bench/bench_quality.py --splits 1   # a quick look

Quality of each photo's scored face (the one :mod:`lfw_cache` keeps), measured as the pool measures it
(:mod:`shared.training.sampling`): ``size`` the shorter side of the face box in pixels (the photo as the engine
loads it), ``sharp`` :func:`shared.faces.engine.sharpness` of the aligned chip (variance of the Laplacian), and
``frontal`` ``1 - |a - b| / (a + b)`` with ``a``, ``b`` the distances from the nose to the two eyes' centres
(dlib's 5 landmarks; 1 = the nose midway between the eyes, a frontal face; lower = turned).

Weights, none with a constant (each factor divided by its largest value among the KOL's enrolment photos, so only
how a KOL's photos compare with each other counts): "size", "sharp", "frontal", "all" (their product), and
"drop worst" (the photo with the lowest product left out of the centroid). The weighted centroid replaces the
plain mean in the model (its distances, margins and the roster's reach); the SVMs and the roster's spread are
trained as shipped.

Protocol: :mod:`bench_accuracy`'s, 5 photos per KOL (cross-fitted: each fold measured with the shipped rule's
procedure fitted on the other fold, plain centroids; the SVMs' background the fitting fold's photos); confidence
with the shipped ``REACH`` and ``DOUBT``. Also printed: how each factor goes with a photo's distance to the centroid
of its person's other photos (Spearman's rho over KOL photos; negative: worse photos lie farther out).
"""
import dataclasses
import time

import numpy as np
from scipy.stats import spearmanr

import lfw_cache
from bench_accuracy import POPULATIONS, Tally, cross_fitted, rosters, run_ours, splits_parser
from shared.faces import engine, images
from shared.recognition import rule as rules_mod
from shared.recognition.rule import roster_reach

SHOTS = 5
FACTORS = ("size", "sharp", "frontal")
WEIGHTS = ("plain", "size", "sharp", "frontal", "all", "drop worst")


def photo_quality(path, entry):
    """``(size px, sharpness, frontal)`` of the scored face of the photo ``path`` (cache ``entry``), or ``None``."""
    i = lfw_cache.subject_index(entry)
    if i is None:
        return None
    rgb = images.load_image(path)
    box = tuple(int(v) for v in entry[0][i])
    top, right, bottom, left = box
    shape = engine.landmarks(rgb, box)
    p = np.array([[shape.part(k).x, shape.part(k).y] for k in range(5)], dtype=np.float64)
    a, b = np.linalg.norm(p[4] - p[:2].mean(0)), np.linalg.norm(p[4] - p[2:4].mean(0))
    chip = engine.align(rgb, [box])[0]
    return float(min(bottom - top, right - left)), engine.sharpness(chip), 1.0 - abs(a - b) / max(a + b, 1e-9)


def qualities():
    """``{float32 embedding bytes: (size, sharp, frontal)}`` of every scored face of both populations."""
    out = {}
    for name in ("lfw_dev", "asian_dev"):
        for _person, path in lfw_cache.photos(name):
            entry = lfw_cache.read_entry(path)
            q = photo_quality(path, entry)
            if q is not None:
                out[np.asarray(lfw_cache.subject(entry), np.float32).tobytes()] = q
    return out


def weights(Q, how):
    """``(n,)`` weights of a KOL's enrolment photos of quality ``Q`` ``(n, 3)`` (size, sharp, frontal) under ``how``."""
    R = Q / np.maximum(Q.max(0), 1e-9)
    if how == "plain":
        return np.ones(len(Q))
    if how in FACTORS:
        return R[:, FACTORS.index(how)]
    w = R.prod(1)
    if how == "drop worst":
        return (np.arange(len(Q)) != int(np.argmin(w))).astype(float) if len(Q) > 1 else np.ones(len(Q))
    return w


def weighted(model, quality, how):
    """``model`` with each KOL's centroid the ``how``-weighted mean of its photos (and the roster's reach measured
    on those centroids)."""
    if how == "plain":
        return model
    C = np.empty_like(model.centroids, dtype=np.float64)
    for k in range(len(model.classes)):
        rows = model.X[model.offsets[k]:model.offsets[k + 1]]
        w = weights(np.array([quality[r.tobytes()] for r in rows]), how)
        C[k] = (w[:, None] * rows).sum(0) / max(w.sum(), 1e-12)
    return dataclasses.replace(model, centroids=C, reach=roster_reach(model.X, model.offsets, C))


def correlations(faces, kols, quality):
    """Spearman's rho of each factor with a KOL photo's distance to the centroid of its person's other photos."""
    rows = []
    for person in kols:
        E = np.asarray(faces[person], dtype=np.float32)
        if len(E) < 3:
            continue
        loo = (E.sum(0)[None, :] - E) / (len(E) - 1)
        d = np.linalg.norm(E - loo, axis=1)
        rows += [(dd,) + quality[e.tobytes()] for dd, e in zip(d, E)]
    rows = np.array(rows)
    return [spearmanr(rows[:, 0], rows[:, 1 + i])[0] for i in range(len(FACTORS))], len(rows)


def main():
    args = splits_parser().parse_args()
    started = time.perf_counter()
    faces, kols, people, splits, rules = cross_fitted(args.splits)
    quality = qualities()
    print(f"quality of {len(quality)} faces measured ({time.perf_counter() - started:.0f} s)")
    for pop in ("lfw_dev", "asian_dev"):
        rho, n = correlations(faces, {k for k in kols if k.startswith(pop + "/")}, quality)
        Q = np.array([quality[np.asarray(e, np.float32).tobytes()] for p in people[pop] for e in faces[p]])
        print(f"  {pop}: median size {np.median(Q[:, 0]):.0f} px, sharpness {np.median(Q[:, 1]):.0f}, frontal "
              f"{np.median(Q[:, 2]):.2f}; Spearman rho with the distance to the own centroid ({n} KOL photos): " +
              ", ".join(f"{f} {r:+.3f}" for f, r in zip(FACTORS, rho)))
    print(f"{SHOTS} photos per KOL")
    gate = (rules_mod.REACH, rules_mod.DOUBT)
    for pop in POPULATIONS:
        tally = {how: Tally() for how in WEIGHTS}
        for _seed, _f, model, tests in rosters(faces, kols, splits, rules, pop, SHOTS):
            for how in WEIGHTS:
                run_ours(weighted(model, quality, how), tests, tally[how], [], gate)
        print(f"\n{pop}:")
        for how in WEIGHTS:
            print(tally[how].line(how, args.splits))
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
