"""The faces of one photo named jointly (issue 23, item 3): each face on its own, the shipped greedy assignment,
or the Hungarian assignment, on photos of two faces.

    nice .venv/bin/python bench/bench_joint.py              # 3 splits, 5 photos per KOL (~10 min on 2 cores)
    nice .venv/bin/python bench/bench_joint.py --splits 1   # a quick look

The development sets have one scored face per photo (:mod:`lfw_cache` keeps the one nearest the centre), so a
photo of two faces is a *composite*: two test photos of two different people of the measured fold, side by side,
each face embedded as it was in its own photo (dlib embeds each face from its own aligned chip, so a face's
embedding does not depend on what else is in the picture). Two kinds of composites, each test photo in one
composite of each kind at most:

- "random": the test photos of a fold in a random order, paired one after the other (two photos of the same
  person are never paired);
- "contested": pairs of test photos of two different people whose nearest KOL centroid is the same KOL, where
  "a KOL names at most one face of a photo" has something to decide.

The three rules, on the same rule's probabilities (:meth:`shared.recognition.model.Model.decide`; a face is
named only with ``p_right >= 0.5``, a KOL names at most one face of the photo in the last two):

- "alone": each face predicted on its own (``Model.predict`` of one row): a KOL may name both faces;
- "greedy": the shipped joint assignment (most confident face first, a face whose best KOL is taken tries its
  next candidates);
- "hungarian": the assignment of the photo's faces to KOLs or "unknown" that maximises the product of the
  named faces' ``p_right / 0.5`` (``scipy.optimize.linear_sum_assignment``; "unknown" scores ``log 0.5``).

Protocol: :mod:`bench_accuracy`'s (cross-fitted: each fold measured with the shipped rule's procedure fitted on
the other fold, the SVMs' background the fitting fold's photos), 5 photos per KOL; the confidence shown is
:func:`shared.recognition.rule.confidence` with the shipped ``REACH`` and ``DOUBT`` (chosen on all of both
populations by ``bench_accuracy.py --fit``, so "sure right" is slightly optimistic for every rule alike).
Reported per population (lfw_dev, asian_dev, mixed) and kind of composite: KOL faces named right, stranger
faces "unknown", sure answers right, and the composites where the rules disagree.
"""
import time

import numpy as np
from scipy.optimize import linear_sum_assignment

from bench_accuracy import POPULATIONS, Tally, cross_fitted, rosters, splits_parser
from shared.recognition.rule import confidence

SHOTS = 5
RULES = ("alone", "greedy", "hungarian")


def hungarian(P, idx):
    """``(M,)`` the column of ``idx`` each face is named as (-1: "unknown"): the assignment of the faces to distinct
    KOLs or "unknown" maximising the sum of ``log(P / 0.5)`` over the named faces; only ``P >= 0.5`` may be named.
    P, idx: ``(M, t)`` as :meth:`shared.recognition.model.Model.decide` gives them."""
    M, t = P.shape
    kols = sorted({int(k) for k in np.asarray(idx).ravel()})
    col = {k: c for c, k in enumerate(kols)}
    forbidden = 1e6
    cost = np.full((M, len(kols) + M), forbidden)
    for i in range(M):
        cost[i, len(kols) + i] = 0.0  # "unknown": log(0.5 / 0.5)
        for j in range(t):
            if P[i, j] >= 0.5:
                cost[i, col[int(idx[i, j])]] = -np.log(P[i, j] / 0.5)
    rows, cols = linear_sum_assignment(cost)
    choice = np.full(M, -1, dtype=np.int64)
    for i, c in zip(rows, cols):
        if c < len(kols) and cost[i, c] < forbidden:
            choice[i] = int(np.flatnonzero(idx[i] == kols[c])[0])
    return choice


def answers(model, E, how):
    """``[(slug or None, confidence shown)]`` for the faces ``E`` ``(M, 128)`` of one photo under the rule ``how``."""
    if how == "alone":
        return [answers(model, E[i:i + 1], "greedy")[0] for i in range(len(E))]
    a = model.decide(E)
    choice = a["choice"] if how == "greedy" else hungarian(a["P"], a["idx"])
    out = []
    for i, j in enumerate(choice):
        if j >= 0:
            out.append((model.classes[int(a["idx"][i, j])], float(confidence(a["P"][i, j], True, model.shrink))))
        else:
            out.append((None, float(confidence(a["S"][i, 0], False, model.shrink, a["d"][i], model.reach))))
    return out


def composites(model, tests, rng):
    """``{"random": [(a, b)], "contested": [(a, b)]}``: pairs of indices into ``tests`` (module docstring)."""
    person = [t[1] for t in tests]
    nearest = np.sqrt(model.sq_distances(np.array([t[0] for t in tests]))).argmin(1)
    out = {"random": [], "contested": []}
    order = list(rng.permutation(len(tests)))
    while len(order) >= 2:
        a = order.pop()
        b = next((x for x in reversed(order) if person[x] != person[a]), None)
        if b is None:
            break
        order.remove(b)
        out["random"].append((a, b))
    for k in np.unique(nearest):
        group = list(rng.permutation(np.flatnonzero(nearest == k)))
        while len(group) >= 2:
            a = group.pop()
            b = next((x for x in group if person[x] != person[a]), None)
            if b is None:
                break
            group.remove(b)
            out["contested"].append((a, b))
    return out


def main():
    args = splits_parser().parse_args()
    started = time.perf_counter()
    faces, kols, _people, splits, rules = cross_fitted(args.splits)
    print(f"{SHOTS} photos per KOL")
    for pop in POPULATIONS:
        tally = {(kind, how): Tally() for kind in ("random", "contested") for how in RULES}
        differ = {"random": [0, 0], "contested": [0, 0]}  # [composites where greedy != alone, hungarian != greedy]
        count = {"random": 0, "contested": 0}
        for seed, f, model, tests in rosters(faces, kols, splits, rules, pop, SHOTS):
            for kind, pairs in composites(model, tests, np.random.default_rng(seed * 10 + f)).items():
                count[kind] += len(pairs)
                for a, b in pairs:
                    got = {how: answers(model, np.array([tests[a][0], tests[b][0]]), how) for how in RULES}
                    differ[kind][0] += [s for s, _ in got["greedy"]] != [s for s, _ in got["alone"]]
                    differ[kind][1] += [s for s, _ in got["hungarian"]] != [s for s, _ in got["greedy"]]
                    for how in RULES:
                        for (slug, conf), i in zip(got[how], (a, b)):
                            tally[(kind, how)].add(slug, tests[i][1], tests[i][2], conf)
        print(f"\n{pop}:")
        for kind in ("random", "contested"):
            print(f"  {kind} composites of two faces: {count[kind]} (greedy answers differ from alone in "
                  f"{differ[kind][0]}, hungarian from greedy in {differ[kind][1]})")
            for how in RULES:
                print(tally[(kind, how)].line(how, args.splits))
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
