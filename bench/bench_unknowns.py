"""The inbox of unknown people (shared/library/unknowns.py): how well its incremental grouping finds people.

    nice .venv/bin/python bench/bench_unknowns.py [--batch 50] [--seed 0]

Per development set (lfw_dev, mostly Western; asian_dev, East Asian; embeddings from
``bench/lfw_cache.py``), every photo's subject face is streamed in a random order (``--seed``) in
batches of ``--batch`` through :meth:`shared.library.unknowns.Inbox.add_faces` on a scratch data folder
(the real path: rule, lock, atomic file), and compared on the same faces, in the same run, with two
clusterings of all faces at once: dlib's ``chinese_whispers_clustering`` at 0.5 and sklearn's
agglomerative average-link at the inbox's own bar.

Printed per population and method: purity (share of groups whose faces are all one person),
completeness (per person, the share of their faces in their largest group, averaged over people),
groups per person, singletons (groups of one face), proposals ("maybe the same person" pairs; the
inbox only) and faces per second.

The rule is cross-fitted: its join bar and clear ratio (:data:`GRID`; the singleton bar 0.04
stricter) are chosen for the largest completeness with purity and faces_right >= :data:`PURITY_TARGET`
on one population and reported on the other, and within a population on one half of its people and
reported on the other half (both ways, pooled): never on the people it was fitted on. A plain bar
(ratio 1: the nearest group within the bar, however close the next one) is fitted and reported the same
way, for what one threshold does to each population (East Asian faces sit closer together in dlib's
space). The shipped rule's row says when it was fitted on the population shown.
"""
import argparse
import random
import tempfile
import time
from collections import Counter, defaultdict

import numpy as np

import lfw_cache
from common import require_data
from shared.library import unknowns

POPULATIONS = ("lfw_dev", "asian_dev")
#: The rules tried when fitting: (join bar, clear ratio); ratio 1.0 is a plain bar (any nearest group will do).
GRID = [(join, ratio) for join in (0.38, 0.44, 0.50, 0.56, 0.62) for ratio in (0.85, 0.90, 0.95, 1.0)]
SINGLE_MARGIN = 0.04
#: A fitted rule keeps both purity and the share of faces with their group's main person at least this.
PURITY_TARGET = 0.95


def population(name, seed):
    """``(embeddings (N, 128), person per face)`` of ``name``'s photos, shuffled with ``seed``."""
    rows = [(person, e) for person, faces in lfw_cache.faces(name).items() for e in faces]
    random.Random(seed).shuffle(rows)
    return np.array([e for _, e in rows]), [p for p, _ in rows]


def scores(groups, people):
    """``{"purity", "faces_right", "completeness", "per_person", "singletons", "groups"}`` of a grouping (one label
    per face); ``faces_right``: the share of faces whose group's most frequent person is them (a group that swallows
    many people counts once in purity, but all its other people's faces here)."""
    members = defaultdict(list)
    for g, p in zip(groups, people):
        members[g].append(p)
    pure = sum(1 for ps in members.values() if len(set(ps)) == 1)
    right = sum(Counter(ps).most_common(1)[0][1] for ps in members.values())
    by_person = defaultdict(Counter)
    for g, p in zip(groups, people):
        by_person[p][g] += 1
    completeness = np.mean([max(c.values()) / sum(c.values()) for c in by_person.values()])
    per_person = np.mean([len(c) for c in by_person.values()])
    return {"purity": pure / len(members), "faces_right": right / len(groups), "completeness": float(completeness), "per_person": float(per_person),
            "singletons": sum(1 for ps in members.values() if len(ps) == 1), "groups": len(members)}


def streamed(X, people, rule, batch, single=None):
    """The inbox with ``rule`` = (join, ratio) on a scratch data folder, the faces added ``batch`` at a time:
    ``(scores, faces/s, proposals)``."""
    join, ratio = rule
    single = join - SINGLE_MARGIN if single is None else single
    with tempfile.TemporaryDirectory() as tmp:
        inbox = unknowns.Inbox(tmp, join=join, single=single, ratio=ratio)
        started = time.perf_counter()
        for i in range(0, len(X), batch):
            inbox.add_faces([(f"f{j}", X[j], None, {"media": f"m{j // batch}", "photo": j % batch})
                             for j in range(i, min(i + batch, len(X)))])
        rate = len(X) / (time.perf_counter() - started)
        ids, groups = inbox.labels()
        order = {fid: g for fid, g in zip(ids, groups)}
        return scores([order[f"f{j}"] for j in range(len(X))], people), rate, len(inbox.proposals())


def fitted(X, people, keep=None):
    """The rule of :data:`GRID` with the largest completeness at purity and faces_right >= :data:`PURITY_TARGET`
    (the rule alone, in memory), on the faces of the people in ``keep`` (all when ``None``)."""
    if keep is not None:
        X, people = X[[p in keep for p in people]], [p for p in people if p in keep]
    best = None
    for join, ratio in GRID:
        labels, _ = unknowns.assign(np.zeros((0, 128)), [], X, join, join - SINGLE_MARGIN, ratio)
        s = scores(labels, people)
        if min(s["purity"], s["faces_right"]) >= PURITY_TARGET and (best is None or s["completeness"] > best[1]):
            best = ((join, ratio), s["completeness"])
    return best[0] if best else GRID[0]


def plain_bar(X, people):
    """The best plain bar (ratio 1.0) as :func:`fitted` picks it: what one distance alone does."""
    global GRID
    saved, GRID = GRID, [g for g in GRID if g[1] == 1.0]
    try:
        return fitted(X, people)
    finally:
        GRID = saved


def label(rule):
    return f"{rule[0]:.2f}/{rule[1]:.2f}"


def chinese_whispers(X):
    """dlib's chinese whispers of all faces at once, edges under 0.5: ``(labels, faces/s)``."""
    import dlib

    started = time.perf_counter()
    labels = dlib.chinese_whispers_clustering([dlib.vector(list(map(float, e))) for e in X], 0.5)
    return labels, len(X) / (time.perf_counter() - started)


def agglomerative(X, threshold):
    """sklearn's average-link clustering of all faces at once, cut at ``threshold``: ``(labels, faces/s)``."""
    from sklearn.cluster import AgglomerativeClustering

    started = time.perf_counter()
    labels = AgglomerativeClustering(n_clusters=None, distance_threshold=threshold, linkage="average",
                                     metric="euclidean").fit_predict(X)
    return labels, len(X) / (time.perf_counter() - started)


def halves(people, seed):
    """The people split in two halves at random (``seed``): the folds of the within-population cross-fit."""
    names = sorted(set(people))
    random.Random(seed + 1).shuffle(names)
    return set(names[:len(names) // 2]), set(names[len(names) // 2:])


def cross_folds(X, people, batch, seed):
    """Fit the bar on one half of the people and stream the other half's faces, both ways; the two halves'
    scores pooled (faces-weighted where the score is a share). Returns ``(scores, faces/s, proposals, bars)``."""
    outs, bars = [], []
    for fit, test in (halves(people, seed), halves(people, seed)[::-1]):
        bar = fitted(X, people, fit)
        mask = [p in test for p in people]
        outs.append((streamed(X[np.array(mask)], [p for p in people if p in test], bar, batch), sum(mask)))
        bars.append(bar)
    total = sum(n for _, n in outs)
    pooled = {k: sum(o[0][k] * n for o, n in outs) / total for k in ("purity", "faces_right", "completeness",
                                                                   "per_person")}
    pooled.update({k: sum(o[0][k] for o, _ in outs) for k in ("singletons", "groups")})
    rate = total / sum(n / o[1] for o, n in outs)
    return pooled, rate, sum(o[2] for o, _ in outs), bars


def row(name, s, rate, proposals="-"):
    print(f"  {name:<44} {s['purity']:>7.3f} {s['faces_right']:>7.3f} {s['completeness']:>8.3f} {s['per_person']:>8.2f} "
          f"{s['singletons']:>6} {s['groups']:>6} {proposals!s:>6} {rate:>9.0f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    require_data()
    data = {name: population(name, args.seed) for name in POPULATIONS}
    rules = {name: fitted(*data[name]) for name in POPULATIONS}
    plain = {name: plain_bar(*data[name]) for name in POPULATIONS}
    shipped = (unknowns.JOIN_DISTANCE, unknowns.CLEAR_RATIO)
    print(f"rules (join bar/clear ratio) fitted for the most completeness at purity and faces_right >= "
          f"{PURITY_TARGET}: " + ", ".join(f"{n}: {label(r)}" for n, r in rules.items())
          + "; plain bars (ratio 1): " + ", ".join(f"{n}: {label(r)}" for n, r in plain.items())
          + f"; singleton bar {SINGLE_MARGIN:.2f} stricter; shipped {label(shipped)}, singletons "
          f"{unknowns.SINGLE_DISTANCE:.2f}")
    for name in POPULATIONS:
        X, people = data[name]
        other = next(n for n in POPULATIONS if n != name)
        print(f"\n{name}: {len(X)} faces of {len(set(people))} people, random order (seed {args.seed}), "
              f"batches of {args.batch}")
        print(f"  {'method':<44} {'purity':>7} {'f_right':>7} {'complete':>8} {'grp/per':>8} {'single':>6} "
              f"{'groups':>6} {'propos':>6} {'faces/s':>9}")
        s, rate, props = streamed(X, people, rules[other], args.batch)
        row(f"inbox {label(rules[other])}, fitted on {other}", s, rate, props)
        s, rate, props, fold_bars = cross_folds(X, people, args.batch, args.seed)
        row(f"inbox {'+'.join(label(b) for b in fold_bars)}, cross-fit halves", s, rate, props)
        s, rate, props = streamed(X, people, plain[other], args.batch)
        row(f"inbox plain bar {label(plain[other])}, fitted on {other}", s, rate, props)
        s, rate, props = streamed(X, people, shipped, args.batch, unknowns.SINGLE_DISTANCE)
        row(f"inbox shipped {label(shipped)}" + (" (fitted here)" if rules[name] == shipped else ""), s, rate, props)
        labels, rate = chinese_whispers(X)
        row("dlib chinese whispers 0.5, all at once", scores(labels, people), rate)
        labels, rate = agglomerative(X, unknowns.JOIN_DISTANCE)
        row(f"sklearn average-link {unknowns.JOIN_DISTANCE:.2f}, all at once", scores(labels, people), rate)


if __name__ == "__main__":
    main()
